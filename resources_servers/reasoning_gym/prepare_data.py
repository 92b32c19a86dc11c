"""Write reasoning_gym task rows for chosen generators, sizes, seeds and difficulty settings.

    python resources_servers/reasoning_gym/prepare_data.py --output tasks.jsonl \
        --generators basic_arithmetic,gcd,maze --size 100 --seed 0 \
        [--config '{"basic_arithmetic": {"min_terms": 3, "max_terms": 6}}']
    python resources_servers/reasoning_gym/prepare_data.py --list

`--generators all` takes every registered generator. `--config` maps a generator to its config
fields (the package's difficulty knobs, e.g. sizes and ranges); unknown fields are an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from resources_servers.reasoning_gym.tasks import generator_names, task_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path)
    parser.add_argument("--generators", default="all", help="comma-separated names, or all")
    parser.add_argument("--size", type=int, default=10, help="rows per generator")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="{}", help="JSON: generator name -> config fields")
    parser.add_argument("--list", action="store_true", help="print the generator names and exit")
    args = parser.parse_args()
    if args.list:
        print("\n".join(generator_names()))
        return
    if args.output is None:
        parser.error("--output is required")
    names = (
        generator_names() if args.generators == "all" else [n.strip() for n in args.generators.split(",") if n.strip()]
    )
    unknown = sorted(set(names) - set(generator_names()))
    if unknown:
        parser.error(f"unknown generator(s): {', '.join(unknown)} (see --list)")
    try:
        configs = json.loads(args.config)
    except json.JSONDecodeError as error:
        parser.error(f"--config is not valid JSON: {error.msg}")
    written = 0
    with args.output.open("w", encoding="utf-8") as out:
        for name in names:
            try:
                rows = list(task_rows(name, size=args.size, seed=args.seed, config=configs.get(name)))
            except (TypeError, ValueError, AssertionError) as error:
                parser.error(f"{name}: cannot generate ({error})")
            out.writelines(json.dumps(row) + "\n" for row in rows)
            written += len(rows)
    print(f"wrote {written} rows from {len(names)} generator(s) to {args.output}")


if __name__ == "__main__":
    main()
