"""Environment folders in NeMo Gym's layout: their requirements.txt is checked (and installed on request)
by ng_run and ng_test, their tests run from the folder (`from app import ...`), and their example
rollouts without `_ng_task_index` are matched to tasks by input.

The folders are written here, the way NeMo Gym authors write them, in a scratch project. pip is
never run for real (no network, and the shared interpreter must not change): the install opt-in
runs a stand-in `pip` module, put first on the import path, that records its arguments and
installs by writing a real `*.dist-info` and module where the child interpreter looks for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from nemo_gym.env_requirements import folder_needs, pip_install_args
from nemo_gym.testing import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from tests.conftest import child_env
from tests.e2e.conftest import scratch_project

MISSING = "h17-not-installed-dep"  # a distribution no index or environment here has
MISSING_MODULE = MISSING.replace("-", "_")

APP = '''\
"""word_count: the answer is the number of words in the quoted text."""

from nemo_gym.servers.resources import BaseResourcesServerConfig, BaseVerifyRequest, BaseVerifyResponse, SimpleResourcesServer
{extra_import}

def count_words(text: str) -> int:
    return len(text.split())


class WordCountServer(SimpleResourcesServer):
    config: BaseResourcesServerConfig

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        return BaseVerifyResponse(**body.model_dump(), reward=1.0)


if __name__ == "__main__":
    WordCountServer.run_webserver()
'''

TESTS = """\
from app import WordCountServer, count_words
from resources_servers.{name}.app import count_words as count_words_by_package


def test_counts_words():
    assert count_words("one two three") == 3


def test_the_folder_and_the_package_import_paths_both_work():
    assert count_words_by_package("a b") == count_words("a b") == 2 and WordCountServer.__name__
"""

CONFIG = """\
{name}:
  resources_servers:
    {name}:
      entrypoint: app.py
      domain: other
"""

TEXTS = ["one", "one two", "one two three", "a b c d", "a b c d e"]


def write_env(project: Path, name: str, requirements: str, *, extra_import: str = "") -> Path:
    """A resources server folder as NeMo Gym lays it out: app.py, configs/, data/, tests/, requirements.txt."""
    folder = project / "resources_servers" / name
    (folder / "tests").mkdir(parents=True)
    (folder / "configs").mkdir()
    (folder / "data").mkdir()
    (folder / "app.py").write_text(APP.format(extra_import=extra_import))
    (folder / "tests" / "test_app.py").write_text(TESTS.format(name=name))
    (folder / "configs" / f"{name}.yaml").write_text(CONFIG.format(name=name))
    (folder / "requirements.txt").write_text(textwrap.dedent(requirements))
    tasks = [{"responses_create_params": {"input": [{"role": "user", "content": f"Count: '{t}'"}]}} for t in TEXTS]
    (folder / "data" / "example.jsonl").write_text("".join(json.dumps(task) + "\n" for task in tasks))
    write_rollouts(folder, [nemo_gym_rollout(text) for text in reversed(TEXTS)])
    return folder


def nemo_gym_rollout(text: str) -> dict:
    """A row as NeMo Gym's collector writes it: the agent's formatting, nullable fields, no _ng_* keys."""
    message = {"role": "user", "content": f"Count: '{text}'", "type": "message"}
    return {
        "responses_create_params": {"input": [message], "tool_choice": None, "parallel_tool_calls": None},
        "response": {"output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text"}]}]},
        "reward": 1.0,
    }


def write_rollouts(folder: Path, rows: list[dict]) -> None:
    (folder / "data" / "example_rollouts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


NEMO_GYM_REQUIREMENTS = """\
    -e nemo-gym[dev] @ ../../
    # the verifier's own needs
    pydantic>=2  # installed here
    """


def run(module: str, project: Path, *args: str, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env=env or child_env(),
    )


def fake_pip_env(tmp_path: Path, exit_code: int = 0) -> tuple[dict, Path, Path]:
    """A child environment whose `python -m pip` is a stand-in: it logs its arguments and, when it
    succeeds, installs each requirement as a real distribution (dist-info + module) in `site`."""
    shim, site = tmp_path / "pip_shim", tmp_path / "site"
    (shim / "pip").mkdir(parents=True)
    site.mkdir()
    log = tmp_path / "pip_args.json"
    (shim / "pip" / "__init__.py").write_text("")
    (shim / "pip" / "__main__.py").write_text(
        textwrap.dedent(
            f"""\
            import json, re, sys
            from pathlib import Path

            args = sys.argv[1:]
            Path({str(log)!r}).write_text(json.dumps(args))
            if {exit_code}:
                print("ERROR: no matching distribution", file=sys.stderr)
                sys.exit({exit_code})
            for spec in args[1:]:
                name = re.split(r"[<>=!~ ;@\\[]", spec)[0]
                module = name.replace("-", "_")
                dist = Path({str(site)!r}) / f"{{module}}-1.5.dist-info"
                dist.mkdir()
                (dist / "METADATA").write_text(f"Metadata-Version: 2.1\\nName: {{name}}\\nVersion: 1.5\\n")
                (Path({str(site)!r}) / f"{{module}}.py").write_text("INSTALLED_BY = 'pip'\\n")
            """
        )
    )
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), str(site), env.get("PYTHONPATH", "")) if p)
    return env, log, site


# --- reading requirements.txt ---------------------------------------------------------------------


def test_requirements_lines_are_read_as_pip_reads_them(tmp_path):
    project = scratch_project(tmp_path / "project")
    folder = project / "resources_servers" / "formats"
    folder.mkdir()
    (folder / "more.txt").write_text("h17-included-dep==2.0\n")
    (folder / "requirements.txt").write_text(
        textwrap.dedent(
            f"""\
            # NeMo Gym itself, in each spelling its folders use: this project, installed by definition
            -e nemo-gym[dev] @ ../../
            -e nemo-gym[dev,sandbox] @ ../..
            -e ../../
            nemo-gym

            --extra-index-url https://example.invalid/simple
            pydantic>=2              # installed: satisfied
            PyYAML                   # another spelling of an installed name
            pydantic<2               # installed, at another version than pinned
            {MISSING}>=1.2 ; python_version >= "3"
            h17-old-python-only ; python_version < "3"
            h17-url-dep @ git+https://example.invalid/org/repo.git@abc123
            git+https://example.invalid/org/egg-named.git#egg=h17-egg-dep
            numpy==0.0.1 \\
                --hash=sha256:0000
            -r more.txt
            -c constraints-are-not-requirements.txt
            """
        )
    )
    needs = folder_needs(folder, project)
    assert needs is not None
    assert [item.shown for item in needs.absent] == [
        f'{MISSING}>=1.2 ; python_version >= "3"',
        "h17-url-dep @ git+https://example.invalid/org/repo.git@abc123",
        "git+https://example.invalid/org/egg-named.git#egg=h17-egg-dep",
        "h17-included-dep==2.0",
    ]
    assert [item.shown.split(" (have ")[0] for item in needs.other_version] == ["pydantic<2", "numpy==0.0.1"]
    assert pip_install_args(needs.absent, needs.pip_options)[:3] == [
        "install",
        "--extra-index-url",
        "https://example.invalid/simple",
    ]


def test_a_folder_whose_requirements_are_all_installed_needs_nothing(tmp_path):
    project = scratch_project(tmp_path / "project")
    folder = write_env(project, "satisfied", NEMO_GYM_REQUIREMENTS)
    assert folder_needs(folder, project) is None


# --- ng_test ------------------------------------------------------------------------------------------


def test_ng_test_runs_tests_from_the_folder_and_accepts_nemo_gym_rollouts(tmp_path):
    project = scratch_project(tmp_path / "project")
    write_env(project, "word_count", NEMO_GYM_REQUIREMENTS)
    result = run("nemo_gym.cli.env_test", project, "+entrypoint=resources_servers/word_count")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout  # `from app import ...` and `from resources_servers.word_count.app import ...`
    assert (
        "5 example rollout(s) carry no _ng_task_index (NeMo Gym's rows do not); matched to the tasks of "
        "data/example.jsonl by their input: row 1 -> task 4, row 2 -> task 3, row 3 -> task 2, row 4 -> task 1, "
        "row 5 -> task 0"
    ) in result.stdout
    assert "data ok: 5 example tasks and 5 example rollouts of them" in result.stdout


def test_ng_test_names_a_nemo_gym_rollout_that_matches_no_task(tmp_path):
    project = scratch_project(tmp_path / "project")
    folder = write_env(project, "word_count", NEMO_GYM_REQUIREMENTS)
    write_rollouts(folder, [nemo_gym_rollout(text) for text in TEXTS[:4]] + [nemo_gym_rollout("from elsewhere")])
    result = run("nemo_gym.cli.env_test", project, "+entrypoint=resources_servers/word_count")
    assert result.returncode == 2, result.stdout + result.stderr
    data_lines = [line for line in result.stderr.splitlines() if line.startswith("ng_test: data:")]
    assert data_lines == [
        f"ng_test: data: {folder / 'data' / 'example_rollouts.jsonl'}:5: no _ng_task_index, and its input "
        "(\"Count: 'from elsewhere'\") is none of the tasks of data/example.jsonl; "
        "was the file copied from another environment?"
    ]


def test_ng_test_stops_on_missing_requirements_with_the_install_command(tmp_path):
    project = scratch_project(tmp_path / "project")
    write_env(
        project,
        "word_count",
        NEMO_GYM_REQUIREMENTS + f"{MISSING}>=1.2\n",
        extra_import=f"import {MISSING_MODULE}",
    )
    result = run("nemo_gym.cli.env_test", project, "+entrypoint=resources_servers/word_count")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "passed" not in result.stdout  # one line; no test ran
    assert result.stderr.startswith(
        f"ng_test: error: resources_servers/word_count needs packages that are not installed: {MISSING}>=1.2; "
        "install them with: "
    )
    # `pip install` when the pip on PATH is this interpreter's, else `<this python> -m pip install`
    assert result.stderr.rstrip().endswith(f"pip install '{MISSING}>=1.2' (or add +install_requirements=true)")


def test_ng_test_installs_missing_requirements_when_asked(tmp_path):
    project = scratch_project(tmp_path / "project")
    write_env(
        project,
        "word_count",
        NEMO_GYM_REQUIREMENTS + f"{MISSING}>=1.2\n",
        extra_import=f"import {MISSING_MODULE}",
    )
    env, log, site = fake_pip_env(tmp_path)
    result = run(
        "nemo_gym.cli.env_test",
        project,
        "+entrypoint=resources_servers/word_count",
        "+install_requirements=true",
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(log.read_text()) == ["install", f"{MISSING}>=1.2"]  # only what is missing; not NeMo Gym itself
    assert "ng_test: installing requirements: " in result.stderr and "still seems to lack" not in result.stderr
    assert "2 passed" in result.stdout  # app.py imports the installed package
    # Installed now: the next run checks, finds everything, and never calls pip.
    log.unlink()
    again = run("nemo_gym.cli.env_test", project, "+entrypoint=resources_servers/word_count", env=env)
    assert again.returncode == 0 and not log.exists(), again.stderr


# --- ng_run -------------------------------------------------------------------------------------------


def test_ng_run_names_every_folder_with_missing_requirements_and_starts_nothing(tmp_path):
    project = scratch_project(tmp_path / "project")
    write_env(project, "first", NEMO_GYM_REQUIREMENTS + f"{MISSING}>=1.2\nh17-also-missing\n")
    write_env(project, "second", NEMO_GYM_REQUIREMENTS + f"{MISSING}>=1.2\n")
    write_env(project, "third", NEMO_GYM_REQUIREMENTS)
    configs = ",".join(f"resources_servers/{name}/configs/{name}.yaml" for name in ("first", "second", "third"))
    result = run("nemo_gym.cli.run", project, f"+config_paths=[{configs}]")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "servers are up" not in result.stdout
    assert lines[0].startswith(
        f"ng_run: error: resources_servers/first needs packages that are not installed: {MISSING}>=1.2, h17-also-missing;"
    )
    assert lines[0].endswith(f"install '{MISSING}>=1.2' h17-also-missing (or add +install_requirements=true)")
    assert lines[1].startswith(
        f"ng_run: error: resources_servers/second needs packages that are not installed: {MISSING}"
    )


def test_ng_run_install_opt_in_runs_pip_once_for_all_folders_and_stops_when_pip_fails(tmp_path):
    project = scratch_project(tmp_path / "project")
    write_env(project, "first", NEMO_GYM_REQUIREMENTS + f"{MISSING}>=1.2\nh17-also-missing\n")
    write_env(project, "second", NEMO_GYM_REQUIREMENTS + f"{MISSING}>=1.2\n")
    env, log, _ = fake_pip_env(tmp_path, exit_code=1)
    configs = ",".join(f"resources_servers/{name}/configs/{name}.yaml" for name in ("first", "second"))
    result = run("nemo_gym.cli.run", project, f"+config_paths=[{configs}]", "+install_requirements=true", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert json.loads(log.read_text()) == ["install", f"{MISSING}>=1.2", "h17-also-missing"]
    assert result.stderr.rstrip().splitlines()[-1] == (
        "ng_run: error: pip could not install the requirements of resources_servers/first, resources_servers/second "
        "(exit code 1; its output is above)"
    )
    assert "servers are up" not in result.stdout


def test_ng_run_install_opt_in_installs_then_starts_the_server_that_imports_it(tmp_path):
    project = scratch_project(tmp_path / "project")
    write_env(project, "first", NEMO_GYM_REQUIREMENTS + f"{MISSING}>=1.2\n", extra_import=f"import {MISSING_MODULE}")
    env, log, _ = fake_pip_env(tmp_path)
    stack = NgRunProcess(
        "resources_servers/first/configs/first.yaml",
        f"+head_server.port={free_port()}",
        "+install_requirements=true",
        cwd=project,
        env=env,
    )
    try:
        stack.wait_ready()
    finally:
        code = stack.stop()
    assert json.loads(log.read_text()) == ["install", f"{MISSING}>=1.2"]
    assert "ng_run: installing requirements: " in stack.output and "still seems to lack" not in stack.output
    assert code == 0, stack.output
