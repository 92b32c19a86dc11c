"""ng_init_resources_server: the files it writes, the names it refuses, and ng_test's checks of example rollouts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from nemo_gym.cli.env_test import check_data
from nemo_gym.errors import ConfigError, OutputExistsError, OutputWriteError
from nemo_gym.scaffold import collect_example_rollouts_command, scaffold_resources_server
from tests.conftest import PROJECT_ROOT, child_env


def test_scaffold_writes_a_complete_environment_with_the_name_everywhere(tmp_path):
    written = scaffold_resources_server(tmp_path, "word_count", domain="knowledge")
    folder = tmp_path / "resources_servers" / "word_count"
    assert sorted(path.relative_to(folder).as_posix() for path in written) == [
        "README.md",
        "app.py",
        "configs/word_count.yaml",
        "data/example.jsonl",
        "tests/test_app.py",
    ]
    for path in written:
        text = path.read_text()
        assert "__NAME__" not in text and "__CLASS__" not in text and "__DOMAIN__" not in text, path
    assert "class WordCountServer(SimpleResourcesServer)" in (folder / "app.py").read_text()
    assert (
        "from resources_servers.word_count.app import WordCountConfig, WordCountServer"
        in (folder / "tests" / "test_app.py").read_text()
    )

    config = yaml.safe_load((folder / "configs" / "word_count.yaml").read_text())
    resources = config["word_count"]["resources_servers"]["word_count"]
    assert resources["entrypoint"] == "app.py" and resources["domain"] == "knowledge"
    assert resources["offline"] is True
    agent = config["word_count_simple_agent"]["responses_api_agents"]["simple_agent"]
    assert agent["resources_server"] == {"type": "resources_servers", "name": "word_count"}
    assert agent["model_server"] == {"type": "responses_api_models", "name": "policy_model"}
    assert agent["datasets"][0]["jsonl_fpath"] == "resources_servers/word_count/data/example.jsonl"

    tasks = [json.loads(line) for line in (folder / "data" / "example.jsonl").read_text().splitlines()]
    assert len(tasks) == 5 and all(
        task["responses_create_params"]["tools"][0]["name"] == "get_word_length" for task in tasks
    )
    assert collect_example_rollouts_command("word_count") in (folder / "README.md").read_text()


@pytest.mark.parametrize("confined", [False, True])
def test_the_scaffolded_verify_gives_zero_to_an_episode_cut_off_at_the_token_limit(tmp_path, confined):
    """The template shows an environment author where to check how the episode ended."""
    scaffold_resources_server(tmp_path, "word_len", domain="knowledge", confined_scoring=confined)
    app = (tmp_path / "resources_servers" / "word_len" / "app.py").read_text()
    verify = app[app.index("    async def verify(") :]
    assert verify.index("body.cut_off()") < verify.index("output_text")
    assert "reward=0.0" in verify[verify.index("body.cut_off()") : verify.index("output_text")]


def test_a_description_with_quotes_stays_valid_yaml(tmp_path):
    scaffold_resources_server(tmp_path, "quoted", description='Says "hi": then #leaves')
    config = yaml.safe_load((tmp_path / "resources_servers/quoted/configs/quoted.yaml").read_text())
    assert config["quoted"]["resources_servers"]["quoted"]["description"] == 'Says "hi": then #leaves'


@pytest.mark.parametrize("name", ["9lives", "my-env", "My_Env", "class", "", "a b"])
def test_names_that_cannot_be_a_python_package_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="lowercase letters, digits and underscores"):
        scaffold_resources_server(tmp_path, name)
    assert not (tmp_path / "resources_servers").exists()


def test_an_unknown_domain_is_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"\+domain=maths: not a domain; use one of math, coding"):
        scaffold_resources_server(tmp_path, "env", domain="maths")


def test_an_existing_folder_is_never_touched(tmp_path):
    folder = tmp_path / "resources_servers" / "mine"
    folder.mkdir(parents=True)
    (folder / "app.py").write_text("# my work\n")
    with pytest.raises(OutputExistsError, match="already exists"):
        scaffold_resources_server(tmp_path, "mine")
    assert (folder / "app.py").read_text() == "# my work\n" and sorted(folder.iterdir()) == [folder / "app.py"]


def run_init(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nemo_gym.cli.init_resources_server", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )


@pytest.fixture
def project(tmp_path):
    (tmp_path / "resources_servers").mkdir()
    (tmp_path / "nemo_gym").symlink_to(PROJECT_ROOT / "nemo_gym")
    return tmp_path


def test_cli_refuses_an_existing_folder_and_a_bad_name_in_one_line_with_exit_2(project):
    assert run_init("+entrypoint=resources_servers/env_a", cwd=project).returncode == 0
    again = run_init("+entrypoint=resources_servers/env_a", cwd=project)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert again.stderr.startswith("ng_init_resources_server: error: ") and "env_a already exists" in again.stderr
    bad = run_init("+entrypoint=resources_servers/env-b", cwd=project)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'env-b' is not usable" in bad.stderr
    outside = run_init("+entrypoint=my_envs/env_c", cwd=project)
    assert outside.returncode == 2 and "expected resources_servers/<name>" in outside.stderr
    assert not (project / "resources_servers" / "env_b").exists()


@pytest.mark.parametrize(
    ("entrypoint", "said"),
    [
        # 300 characters used to reach the file system: an OSError traceback ("File name too long").
        (f"resources_servers/{'a' * 300}", "(300 characters) is not usable"),
        ("resources_servers/env-b", "'env-b' is not usable"),
        ("resources_servers/9lives", "'9lives' is not usable"),
        ("resources_servers/..", "'..' is not usable"),
        ("resources_servers/x.y", "'x.y' is not usable"),
        ("resources_servers/a/b", "one folder directly inside resources_servers"),
        ("resources_servers/../escape", "one folder directly inside resources_servers"),
        ("/resources_servers/abs", "one folder directly inside resources_servers"),
    ],
)
def test_cli_refuses_an_unusable_name_in_one_line_saying_what_is_allowed(project, entrypoint, said):
    result = run_init(f"+entrypoint={entrypoint}", cwd=project)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("ng_init_resources_server: error: ") and said in line
    assert "lowercase letters, digits and underscores" in line or "expected resources_servers/<name>" in line
    assert len(line) < 400
    assert sorted(path.name for path in project.iterdir()) == ["nemo_gym", "resources_servers"]
    assert not any((project / "resources_servers").iterdir())


def test_names_up_to_64_characters_are_usable(tmp_path):
    assert scaffold_resources_server(tmp_path, "a" * 64)
    with pytest.raises(ConfigError, match="1 to 64 lowercase letters"):
        scaffold_resources_server(tmp_path, "b" * 65)
    assert sorted(path.name for path in (tmp_path / "resources_servers").iterdir()) == ["a" * 64]


def test_a_folder_the_os_refuses_is_one_error_and_leaves_nothing_half_made(tmp_path):
    (tmp_path / "resources_servers").write_text("a file where the folder should be\n")
    with pytest.raises(OutputWriteError, match=r"cannot write .*resources_servers/my_env"):
        scaffold_resources_server(tmp_path, "my_env")
    assert (tmp_path / "resources_servers").read_text() == "a file where the folder should be\n"


def test_cli_help_lists_its_parameters(project):
    result = run_init("+help=true", cwd=project)
    assert result.returncode == 0 and "+entrypoint" in result.stdout and "+domain" in result.stdout


# --- ng_test's checks of the example rollouts ---------------------------------------------------


def test_rollouts_copied_from_another_environment_are_named_as_such(tmp_path):
    scaffold_resources_server(tmp_path, "fresh")
    folder = tmp_path / "resources_servers" / "fresh"
    shutil.copy(
        PROJECT_ROOT / "resources_servers/example_single_tool_call/data/example_rollouts.jsonl",
        folder / "data" / "example_rollouts.jsonl",
    )
    problems = check_data(folder)
    assert len(problems) == 5
    assert all("was the file copied from another environment?" in problem for problem in problems)
    assert 'example_rollouts.jsonl:1: its input ("what\'s it like in sf?") is not task 0' in problems[0]


def test_rollouts_of_this_environment_pass_whatever_their_order_and_formatting(tmp_path):
    scaffold_resources_server(tmp_path, "fresh")
    data = tmp_path / "resources_servers" / "fresh" / "data"
    tasks = [json.loads(line) for line in (data / "example.jsonl").read_text().splitlines()]
    rows = []
    for index in reversed(range(5)):
        conversation = [dict(item, type="message") for item in tasks[index]["responses_create_params"]["input"]]
        rows.append(
            {
                "responses_create_params": {"input": conversation, "temperature": 0.0},
                "reward": 1.0,
                "_ng_task_index": index,
                "_ng_rollout_index": 0,
            }
        )
    (data / "example_rollouts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert check_data(data.parent) == []
    rows[0]["_ng_task_index"] = 7
    (data / "example_rollouts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert check_data(data.parent) == [
        f"{data / 'example_rollouts.jsonl'}:1: _ng_task_index 7 is not a task of data/example.jsonl (0..4); "
        f"these rows were not collected from this environment's tasks"
    ]


def test_confined_scoring_scaffold_scores_in_the_sandbox_and_its_own_tests_pass(tmp_path):
    """`+confined_scoring=true`: app.py scores through scoring.py in the sandbox, and the generated tests
    (which start the server, so the scorer warms up in the sandbox) pass as they are."""
    from tests.e2e.conftest import python_module, scratch_project

    project = scratch_project(tmp_path / "project")
    created = python_module(
        "nemo_gym.cli.init_resources_server",
        "+entrypoint=resources_servers/word_len",
        "+confined_scoring=true",
        cwd=project,
    )
    assert created.returncode == 0, created.stderr
    folder = project / "resources_servers" / "word_len"
    assert "resources_servers/word_len/scoring.py" in created.stdout
    app = (folder / "app.py").read_text()
    assert 'open_confined_scorer(Path(__file__).with_name("scoring.py")' in app
    scoring = (folder / "scoring.py").read_text()
    assert "import nemo_gym" not in scoring and "from nemo_gym" not in scoring  # the sandbox cannot see the project

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "resources_servers/word_len/tests"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "6 passed" in tests.stdout
