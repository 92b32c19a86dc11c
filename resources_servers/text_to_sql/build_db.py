"""Build `data/company.sqlite`, the small company database the text_to_sql tasks ask about.

    python resources_servers/text_to_sql/build_db.py [--output PATH]

All rows are written here (invented names and numbers); the same script always produces the same
content, and a test checks the shipped file against a fresh build.
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "data" / "company.sqlite"

SCHEMA = """
CREATE TABLE departments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    city TEXT NOT NULL,
    budget INTEGER NOT NULL            -- yearly, in euros
);
CREATE TABLE employees (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    department_id INTEGER NOT NULL REFERENCES departments(id),
    title TEXT NOT NULL,
    salary INTEGER NOT NULL,           -- yearly, in euros
    hire_date TEXT NOT NULL,           -- YYYY-MM-DD
    manager_id INTEGER REFERENCES employees(id)
);
CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    department_id INTEGER NOT NULL REFERENCES departments(id),
    status TEXT NOT NULL CHECK (status IN ('planned', 'active', 'done')),
    start_date TEXT NOT NULL
);
CREATE TABLE assignments (
    employee_id INTEGER NOT NULL REFERENCES employees(id),
    project_id INTEGER NOT NULL REFERENCES projects(id),
    hours_per_week INTEGER NOT NULL,
    PRIMARY KEY (employee_id, project_id)
);
"""

DEPARTMENTS = [
    (1, "Engineering", "Oslo", 1_200_000),
    (2, "Sales", "Lisbon", 650_000),
    (3, "Marketing", "Lisbon", 400_000),
    (4, "Finance", "Zurich", 300_000),
    (5, "Support", "Oslo", 250_000),
]

EMPLOYEES = [
    (1, "Ingrid Solberg", 1, "VP Engineering", 150_000, "2015-03-01", None),
    (2, "Tomas Reis", 1, "Staff Engineer", 120_000, "2016-07-15", 1),
    (3, "Mei Tanaka", 1, "Senior Engineer", 105_000, "2018-01-08", 2),
    (4, "Arjun Mehta", 1, "Engineer", 82_000, "2021-09-20", 2),
    (5, "Lena Fischer", 1, "Engineer", 79_000, "2022-04-11", 3),
    (6, "Kwame Boateng", 1, "Senior Engineer", 101_000, "2019-11-04", 2),
    (7, "Sofia Costa", 2, "Head of Sales", 130_000, "2014-06-02", None),
    (8, "Pedro Alves", 2, "Account Executive", 70_000, "2020-02-17", 7),
    (9, "Hanna Berg", 2, "Account Executive", 72_000, "2019-05-27", 7),
    (10, "Diego Ramos", 2, "Sales Analyst", 58_000, "2023-01-09", 7),
    (11, "Clara Nunes", 3, "Marketing Lead", 95_000, "2017-10-30", None),
    (12, "Omar Haddad", 3, "Content Writer", 54_000, "2022-08-01", 11),
    (13, "Julia Weber", 3, "Designer", 61_000, "2021-03-15", 11),
    (14, "Lukas Meier", 4, "CFO", 160_000, "2013-01-14", None),
    (15, "Aisha Khan", 4, "Accountant", 68_000, "2020-10-05", 14),
    (16, "Nils Eriksen", 5, "Support Lead", 75_000, "2018-05-21", None),
    (17, "Rosa Martins", 5, "Support Agent", 48_000, "2022-11-28", 16),
    (18, "Yuki Sato", 5, "Support Agent", 47_000, "2023-06-12", 16),
]

PROJECTS = [
    (1, "Atlas", 1, "active", "2024-01-15"),
    (2, "Beacon", 1, "done", "2023-03-01"),
    (3, "Comet", 1, "planned", "2025-02-01"),
    (4, "Harbor CRM rollout", 2, "active", "2024-06-01"),
    (5, "Spring campaign", 3, "done", "2024-02-10"),
    (6, "Brand refresh", 3, "active", "2024-09-01"),
    (7, "Audit 2024", 4, "active", "2024-11-01"),
    (8, "Help center", 5, "planned", "2025-03-01"),
]

ASSIGNMENTS = [
    (2, 1, 20),
    (3, 1, 30),
    (4, 1, 40),
    (5, 2, 10),
    (5, 1, 25),
    (6, 2, 15),
    (6, 3, 10),
    (8, 4, 20),
    (9, 4, 25),
    (10, 4, 30),
    (3, 4, 5),
    (12, 5, 20),
    (13, 6, 30),
    (11, 6, 10),
    (12, 6, 15),
    (15, 7, 35),
    (14, 7, 5),
    (16, 8, 10),
    (17, 8, 20),
    (4, 8, 5),
]


def build(output: Path) -> Path:
    """Write the database to `output` (replacing it) and return the path."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    with sqlite3.connect(partial) as connection:
        connection.executescript(SCHEMA)
        connection.executemany("INSERT INTO departments VALUES (?, ?, ?, ?)", DEPARTMENTS)
        connection.executemany("INSERT INTO employees VALUES (?, ?, ?, ?, ?, ?, ?)", EMPLOYEES)
        connection.executemany("INSERT INTO projects VALUES (?, ?, ?, ?, ?)", PROJECTS)
        connection.executemany("INSERT INTO assignments VALUES (?, ?, ?)", ASSIGNMENTS)
    connection.close()
    partial.replace(output)  # readers never see a half-written database
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    print(f"wrote {build(parser.parse_args().output)}")


if __name__ == "__main__":
    main()
