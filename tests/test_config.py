"""The config loader as a user meets it: YAML files, env.yaml and CLI overrides in, servers out."""

from __future__ import annotations

import pathlib
import socket

import pytest

from nemo_gym.config import (
    SERVER_TYPES,
    GlobalConfig,
    ServerInstance,
    load_global_config,
    parse_overrides,
    redact,
)
from nemo_gym.errors import (
    AlmostServerError,
    ConfigError,
    ConfigFileNotFoundError,
    ConfigInterpolationError,
    ConfigOverrideError,
    ConfigSyntaxError,
    InputError,
    MissingConfigValueError,
    NoServerInstancesError,
    PortConflictError,
    ServerRefNotFoundError,
    UnknownServerError,
)

RESOURCES = """
my_res:
  resources_servers:
    my_impl:
      entrypoint: app.py
      domain: math
      greeting: from-file
"""

AGENT_AND_MODEL = """
my_agent:
  responses_api_agents:
    simple_agent:
      entrypoint: app.py
      resources_server: {type: resources_servers, name: my_res}
      model_server: {type: responses_api_models, name: policy_model}
policy_model:
  responses_api_models:
    openai_model:
      entrypoint: app.py
      openai_base_url: ${policy_base_url}
      openai_api_key: ${policy_api_key}
policy_base_url: https://api.example.com/v1
policy_api_key: sk-from-file
"""


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(tmp_path: pathlib.Path, *argv: str, **kwargs) -> GlobalConfig:
    return load_global_config(list(argv), project_root=tmp_path, cwd=tmp_path, **kwargs)


# ------------------------------------------------------------------------------ overrides


def test_overrides_are_typed_like_hydra():
    cfg = parse_overrides(
        [
            "+a.b=1",
            "++a.c=1.5",
            "flag=true",
            "+nothing=null",
            "+config_paths=[x.yaml,y.yaml]",
            "+quoted='007'",
            '+spaced="hello world"',
            "+url=http://localhost:8000/v1",
            "+responses_create_params.temperature=0.0",
        ]
    )
    assert cfg.a.b == 1 and cfg.a.c == 1.5 and cfg.flag is True and cfg.nothing is None
    assert list(cfg.config_paths) == ["x.yaml", "y.yaml"]
    assert cfg.quoted == "007" and cfg.spaced == "hello world"
    assert cfg.url == "http://localhost:8000/v1"
    assert cfg.responses_create_params.temperature == 0.0


# Plain overrides are read without Hydra (its import was a good part of every command's start-up);
# each of these must come out exactly as Hydra's own parser reads it: value, type, key path.
PLAIN_OVERRIDES = [
    "+a=1",
    "+a=-1",
    "+a=+1",
    "+a=0",
    "+a=01",
    "+a=1_000",
    "+a=1__0",
    "+a=1_",
    "+a=_1",
    "+a=0x10",
    "+a=1.",
    "+a=.5",
    "+a=-.5",
    "+a=1.5",
    "+a=1_0.5_0",
    "+a=1.2.3",
    "+a=1e3",
    "+a=1E-3",
    "+a=5e+3",
    "+a=1.e5",
    "+a=.5e1",
    "+a=-5e",
    "+a=1e",
    "+a=inf",
    "+a=-INF",
    "+a=+Inf",
    "+a=infinity",
    "+a=info",
    "+a=nan",
    "+a=NaN",
    "+a=nano",
    "+a=true",
    "+a=True",
    "+a=FALSE",
    "+a=truex",
    "+a=null",
    "+a=Null",
    "+a=nullx",
    "+a=none",
    "+a=-",
    "+a=.",
    "+a=:",
    "+a=+",
    "+a=1:2",
    "+a=1-2",
    "+a=a-b",
    "+a=-a",
    "+a=/tmp/x_1.jsonl",
    "+a=../data/1.jsonl",
    "+a=http://127.0.0.1:8000/v1",
    "+a=results/x.jsonl",
    "+a=a.b",
    "+a=_",
    "+a=x:y",
    "+a=1.0.0",
    "+a=v1.5",
    "+a=2024-01-01",
    "+a=12:30",
    "a=1",
    "++a=x",
    "+a.b.c=3",
    "+head_server.port=11000",
    "+a=[x.yaml,y.yaml]",
    "+a=[1,2.5,true,null,x,-,1.2.3]",
    "+a=[a]",
    "+a=[inf,1_0,01,nan]",
    "+config_paths=[resources_servers/x/configs/x.yaml,responses_api_models/openai_model/configs/openai_model.yaml]",
    "+A_b.C9=word",
]


def test_plain_overrides_read_as_hydra_reads_them():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    hydra = OverridesParser.create()
    for text in PLAIN_OVERRIDES:
        override = hydra.parse_override(text)
        expected = OmegaConf.create()
        OmegaConf.update(expected, override.key_or_group, override.value(), merge=False, force_add=True)
        ours = parse_overrides([text])
        key = override.key_or_group
        want, got = OmegaConf.select(expected, key), OmegaConf.select(ours, key)
        assert type(got) is type(want), (text, got, want)
        assert repr(got) == repr(want), (text, got, want)  # repr: nan == nan
        assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(expected), text


def test_plain_command_lines_do_not_import_hydra():
    """The overrides a collection is started with are all plain: no Hydra import at all (a subprocess,
    so the modules other tests imported do not count)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from nemo_gym.config import parse_overrides\n"
        "cfg = parse_overrides(['+agent_name=my_agent', '+input_jsonl_fpath=data/in.jsonl', '+limit=5',\n"
        "                       '+head_server.port=11000', '+responses_create_params.temperature=0.7',\n"
        "                       '+config_paths=[a/x.yaml,b/y.yaml]'])\n"
        "assert cfg.limit == 5 and cfg.responses_create_params.temperature == 0.7, cfg\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'hydra'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("override", ["a.b", "+a=[1,", "+a=1,2", "~a"])
def test_malformed_override_names_the_override(override):
    with pytest.raises(ConfigOverrideError) as info:
        parse_overrides(["+ok=1", override])
    message = str(info.value)
    assert repr(override) in message and "\n" not in message


# ------------------------------------------------------------------------------ precedence


def test_precedence_config_paths_then_env_yaml_then_cli(tmp_path):
    write(tmp_path / "conf.yaml", RESOURCES + "level: file\nfile_only: 1\nenv_and_file: file\n")
    write(tmp_path / "env.yaml", "level: env\nenv_and_file: env\nconfig_paths: [conf.yaml]\n")

    cfg = load(tmp_path, "+level=cli")

    assert cfg.get("level") == "cli"
    assert cfg.get("env_and_file") == "env"
    assert cfg.get("file_only") == 1
    assert cfg.get("absent", "fallback") == "fallback"
    assert cfg.get("config_paths") == [str(tmp_path / "conf.yaml")]
    assert [i.name for i in cfg.instances] == ["my_res"]


def test_env_yaml_in_current_directory_wins_over_project_root(tmp_path):
    root, work = tmp_path / "root", tmp_path / "work"
    write(root / "env.yaml", "who: root\n")
    write(work / "env.yaml", "who: cwd\n")
    assert load_global_config([], project_root=root, cwd=work).get("who") == "cwd"
    assert load_global_config([], project_root=root, cwd=root).get("who") == "root"


def test_relative_config_paths_fall_back_to_project_root(tmp_path):
    root, work = tmp_path / "root", tmp_path / "work"
    write(root / "configs/res.yaml", RESOURCES)
    work.mkdir()
    cfg = load_global_config(["+config_paths=[configs/res.yaml]"], project_root=root, cwd=work)
    assert cfg.instance("my_res").directory == root.resolve() / "resources_servers" / "my_impl"


def test_config_paths_from_env_yaml_named_list(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES)
    write(tmp_path / "env.yaml", "my_paths: [res.yaml]\n")
    cfg = load(tmp_path, "+config_paths=${my_paths}")
    assert [i.name for i in cfg.instances] == ["my_res"]


def test_including_file_overrides_included_and_later_sibling_wins(tmp_path):
    write(tmp_path / "base.yaml", "value: base\nbase_only: 1\nsibling: base\n")
    write(tmp_path / "mid.yaml", "config_paths: [base.yaml]\nvalue: mid\n")
    write(tmp_path / "top.yaml", "config_paths: [mid.yaml]\nvalue: top\n")
    write(tmp_path / "later.yaml", "config_paths: [base.yaml]\nsibling: later\n")

    cfg = load(tmp_path, "+config_paths=[top.yaml,later.yaml]")

    assert cfg.get("value") == "top"
    assert cfg.get("base_only") == 1
    assert cfg.get("sibling") == "later"
    # post-order, each file once
    assert cfg.get("config_paths") == [str(tmp_path / n) for n in ("base.yaml", "mid.yaml", "top.yaml", "later.yaml")]


def test_include_cycle_loads_each_file_once(tmp_path):
    write(tmp_path / "a.yaml", "config_paths: [b.yaml]\nwho: a\n")
    write(tmp_path / "b.yaml", "config_paths: [a.yaml]\nwho: b\n")
    assert load(tmp_path, "+config_paths=[a.yaml]").get("who") == "a"


# ------------------------------------------------------------------------------ interpolation


def test_interpolation_stays_raw_and_resolves_per_server(tmp_path, monkeypatch):
    monkeypatch.setenv("NG_TEST_JUDGE_URL", "http://judge:9000")
    monkeypatch.delenv("NG_TEST_UNSET", raising=False)
    write(tmp_path / "res.yaml", RESOURCES)
    write(tmp_path / "am.yaml", AGENT_AND_MODEL)
    write(
        tmp_path / "env.yaml",
        "policy_api_key: sk-secret\njudge: ${oc.env:NG_TEST_JUDGE_URL}\nfallback: ${oc.env:NG_TEST_UNSET,plan-b}\n",
    )

    cfg = load(tmp_path, "+config_paths=[res.yaml,am.yaml]")

    inner = cfg.to_container()["policy_model"]["responses_api_models"]["openai_model"]
    assert inner["openai_api_key"] == "${policy_api_key}"
    model = cfg.server_config_dict("policy_model")
    assert model["openai_api_key"] == "sk-secret"
    assert model["openai_base_url"] == "https://api.example.com/v1"
    assert model["name"] == "policy_model"
    assert (model["host"], model["port"]) == (cfg.instance("policy_model").host, cfg.instance("policy_model").port)
    assert cfg.get("judge") == "http://judge:9000"
    assert cfg.get("fallback") == "plan-b"
    assert cfg.to_container(resolve=True)["fallback"] == "plan-b"


def test_interpolation_to_missing_key_names_the_key(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES.replace("from-file", "${nowhere_to_be_found}"))
    with pytest.raises(ConfigInterpolationError) as info:
        load(tmp_path, "+config_paths=[res.yaml]")
    assert "nowhere_to_be_found" in str(info.value)
    assert "my_res" in str(info.value)


# ------------------------------------------------------------------------------ servers, hosts, ports


def test_servers_found_in_order_with_free_distinct_ports(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES)
    write(tmp_path / "am.yaml", AGENT_AND_MODEL)

    cfg = load(tmp_path, "+config_paths=[res.yaml,am.yaml]", require_servers=True)

    assert [(i.name, i.server_type, i.implementation) for i in cfg.instances] == [
        ("my_res", "resources_servers", "my_impl"),
        ("my_agent", "responses_api_agents", "simple_agent"),
        ("policy_model", "responses_api_models", "openai_model"),
    ]
    ports = [i.port for i in cfg.instances]
    assert len(set(ports)) == 3 and cfg.head_port not in ports and all(p > 0 for p in ports)
    assert all(i.host == "127.0.0.1" for i in cfg.instances)
    agent = cfg.instance("my_agent")
    assert isinstance(agent, ServerInstance) and agent.url == f"http://127.0.0.1:{agent.port}"
    assert agent.entrypoint == "app.py"
    # computed addresses are written back for the child processes
    assert cfg.raw.my_agent.responses_api_agents.simple_agent.port == agent.port
    assert (cfg.head_host, cfg.head_port) == ("127.0.0.1", 11000)
    assert set(SERVER_TYPES) == {i.server_type for i in cfg.instances}


def test_cli_sets_host_and_port_and_default_host(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES)
    write(tmp_path / "am.yaml", AGENT_AND_MODEL)
    cfg = load(
        tmp_path,
        "+config_paths=[res.yaml,am.yaml]",
        "+my_res.resources_servers.my_impl.port=8123",
        "+my_res.resources_servers.my_impl.host=0.0.0.0",
        "+default_host=127.0.0.2",
    )
    res = cfg.instance("my_res")
    assert (res.host, res.port) == ("0.0.0.0", 8123)
    assert cfg.instance("my_agent").host == "127.0.0.2"
    assert cfg.server_config_dict("my_res")["greeting"] == "from-file"


def test_free_port_never_takes_a_port_claimed_later_in_the_config(tmp_path):
    with socket.socket() as sock:  # a port that is free right now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    write(tmp_path / "res.yaml", RESOURCES)
    write(tmp_path / "am.yaml", AGENT_AND_MODEL)
    cfg = load(
        tmp_path, "+config_paths=[res.yaml,am.yaml]", f"+policy_model.responses_api_models.openai_model.port={port}"
    )
    assert cfg.instance("policy_model").port == port
    assert port not in (cfg.instance("my_res").port, cfg.instance("my_agent").port)


def test_head_server_override(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES)
    cfg = load(tmp_path, "+config_paths=[res.yaml]", "+head_server.host=0.0.0.0", "+head_server.port=12345")
    assert (cfg.head_host, cfg.head_port) == ("0.0.0.0", 12345)
    assert cfg.to_container()["head_server"] == {"host": "0.0.0.0", "port": 12345}
    assert cfg.instance("my_res").port != 12345


def test_plain_dicts_and_reserved_keys_are_not_servers(tmp_path):
    cfg = load(
        tmp_path,
        "+responses_create_params.temperature=0.5",
        "+head_server.port=11001",
        "+agent_name=my_agent",
        "+data.resources_servers.foo.domain=math",  # a server-type key but no entrypoint: data
    )
    assert cfg.instances == []
    assert cfg.get("agent_name") == "my_agent"
    assert cfg.get("responses_create_params") == {"temperature": 0.5}


# ------------------------------------------------------------------------------ errors


def test_missing_config_file_lists_where_it_looked(tmp_path):
    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir(), work.mkdir()
    with pytest.raises(ConfigFileNotFoundError) as info:
        load_global_config(["+config_paths=[configs/nope.yaml]"], project_root=root, cwd=work)
    message = str(info.value)
    assert "configs/nope.yaml" in message
    assert str(work / "configs/nope.yaml") in message and str(root / "configs/nope.yaml") in message


def test_missing_included_file_names_the_including_file(tmp_path):
    write(tmp_path / "top.yaml", "config_paths: [gone.yaml]\n")
    with pytest.raises(ConfigFileNotFoundError) as info:
        load(tmp_path, "+config_paths=[top.yaml]")
    assert "gone.yaml" in str(info.value) and str(tmp_path / "top.yaml") in str(info.value)


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    write(tmp_path / "bad.yaml", "ok: 1\nbroken: [1, 2\nnext: 3\n")
    with pytest.raises(ConfigSyntaxError) as info:
        load(tmp_path, "+config_paths=[bad.yaml]")
    message = str(info.value)
    assert f"{tmp_path / 'bad.yaml'}:3:" in message and "\n" not in message


def test_duplicate_yaml_key_is_a_syntax_error_with_position(tmp_path):
    write(tmp_path / "env.yaml", "a: 1\na: 2\n")
    with pytest.raises(ConfigSyntaxError, match=r"env\.yaml:2:1: .*duplicate key"):
        load(tmp_path)


def test_unknown_server_ref_suggests_the_close_name(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES)
    write(tmp_path / "am.yaml", AGENT_AND_MODEL.replace("name: my_res", "name: my_rez"))
    with pytest.raises(ServerRefNotFoundError) as info:
        load(tmp_path, "+config_paths=[res.yaml,am.yaml]")
    message = str(info.value)
    assert "my_agent.responses_api_agents.simple_agent.resources_server" in message
    assert "Did you mean 'my_res'?" in message


def test_server_ref_with_no_close_name_lists_what_exists(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES)
    write(tmp_path / "am.yaml", AGENT_AND_MODEL.replace("name: policy_model", "name: zzz"))
    with pytest.raises(ServerRefNotFoundError, match="Available responses_api_models: policy_model"):
        load(tmp_path, "+config_paths=[res.yaml,am.yaml]")


def test_missing_mandatory_values_are_all_reported_with_hints(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES + "      judge_url: ???\n      nested: {token: '???'}\n")
    with pytest.raises(MissingConfigValueError) as info:
        load(tmp_path, "+config_paths=[res.yaml]")
    message = str(info.value)
    assert "++my_res.resources_servers.my_impl.judge_url=<value>" in message
    assert "++my_res.resources_servers.my_impl.nested.token=<value>" in message


def test_missing_value_set_from_cli_is_fine(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES + "      judge_url: ???\n")
    cfg = load(tmp_path, "+config_paths=[res.yaml]", "++my_res.resources_servers.my_impl.judge_url=http://j")
    assert cfg.server_config_dict("my_res")["judge_url"] == "http://j"


def test_two_servers_on_one_port_names_both(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES)
    write(tmp_path / "am.yaml", AGENT_AND_MODEL)
    with pytest.raises(PortConflictError) as info:
        load(
            tmp_path,
            "+config_paths=[res.yaml,am.yaml]",
            "+my_res.resources_servers.my_impl.port=8500",
            "+policy_model.responses_api_models.openai_model.port=8500",
        )
    assert "`my_res`" in str(info.value) and "`policy_model`" in str(info.value) and "8500" in str(info.value)


def test_server_on_the_head_port_conflicts(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES)
    with pytest.raises(PortConflictError, match="head server"):
        load(tmp_path, "+config_paths=[res.yaml]", "+my_res.resources_servers.my_impl.port=11000")


def test_almost_server_lists_each_problem(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES.replace("      domain: math\n", "") + "  responses_api_agents: {}\n")
    write(tmp_path / "bad_agent.yaml", "bad_agent: {responses_api_agents: {simple_agent: {entrypoint: /abs/app.py}}}\n")
    with pytest.raises(AlmostServerError) as info:
        load(tmp_path, "+config_paths=[res.yaml,bad_agent.yaml]")
    message = str(info.value)
    assert "`my_res`" in message and "server-type keys" in message
    assert "`bad_agent`" in message and "absolute" in message


def test_resources_server_without_domain_is_an_almost_server(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES.replace("      domain: math\n", ""))
    with pytest.raises(AlmostServerError, match=r"`my_res` \(resources_servers\.my_impl\): `domain` is required"):
        load(tmp_path, "+config_paths=[res.yaml]")


def test_almost_servers_can_be_skipped_with_a_warning(tmp_path, capsys):
    write(tmp_path / "res.yaml", RESOURCES.replace("domain: math", "domain: cooking"))
    cfg = load(tmp_path, "+config_paths=[res.yaml]", "+error_on_almost_servers=false")
    assert cfg.instances == []
    assert "cooking" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["a.yaml", "{a: 1}", "[1,2]"])
def test_config_paths_not_a_list_of_strings(tmp_path, value):
    with pytest.raises(ConfigError, match="config_paths must be a list of strings"):
        load(tmp_path, f"+config_paths={value}")


def test_unknown_instance_and_no_servers(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES)
    with pytest.raises(UnknownServerError, match="Did you mean 'my_res'"):
        load(tmp_path, "+config_paths=[res.yaml]").instance("my_ress")
    with pytest.raises(NoServerInstancesError):
        load(tmp_path, require_servers=True)


def test_every_config_error_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        load(tmp_path, "+config_paths=[missing.yaml]")


# ------------------------------------------------------------------------------ redaction


def test_redact_hides_secrets_but_not_settings():
    config = {
        "policy_api_key": "sk-1",
        "hf_token": "hf-1",
        "nested": [{"password": "p", "client_secret": "s", "max_tokens": 5}],
        "token_id_capture": True,
        "unset_key": None,
        "model": "gpt",
    }
    hidden = redact(config)
    assert hidden == {
        "policy_api_key": "***",
        "hf_token": "***",
        "nested": [{"password": "***", "client_secret": "***", "max_tokens": 5}],
        "token_id_capture": True,
        "unset_key": None,
        "model": "gpt",
    }
    assert config["policy_api_key"] == "sk-1"  # a copy, not in place


def test_find_project_root_walks_up_to_the_folder_with_servers_and_package(tmp_path):
    from nemo_gym.config import find_project_root

    (tmp_path / "resources_servers").mkdir()
    (tmp_path / "nemo_gym").mkdir()
    deep = tmp_path / "resources_servers" / "env" / "configs"
    deep.mkdir(parents=True)
    assert find_project_root(deep) == tmp_path.resolve()


def test_redact_masks_credentials_inside_urls_wherever_they_sit():
    hidden = redact(
        {
            "openai_base_url": "http://user:KEY@host:8000/v1",
            "mirrors": ["https://TOKEN@example.com/repo", "see http://a:b@h/x now"],
            "query": "http://host/v1?api_key=abc&model=m",
            "plain": "http://host/v1",
        }
    )
    assert hidden == {
        "openai_base_url": "http://user:***@host:8000/v1",
        "mirrors": ["https://***@example.com/repo", "see http://a:***@h/x now"],
        "query": "http://host/v1?api_key=***&model=m",
        "plain": "http://host/v1",
    }


# ------------------------------------------------------------------------------ unknown keys


def test_unknown_keys_walk_nested_models_lists_and_dicts():
    from typing import Any

    from pydantic import BaseModel, ConfigDict, Field

    from nemo_gym.unknown_keys import describe_unknown_keys, find_unknown_keys

    class Ref(BaseModel):
        type: str
        name: str

    class Free(BaseModel):
        model_config = ConfigDict(extra="allow")

    class Settings(BaseModel):
        model_config = ConfigDict(extra="allow")  # the top level is strict anyway
        num_repeats: int | None = None
        judge: Ref | None = None
        refs: list[Ref] = []
        by_name: dict[str, Ref] = {}
        free_form: dict[str, Any] = {}
        anything: Free = Field(default_factory=Free)
        timeout: float = Field(1.0, alias="timeout_s")

    data = {
        "num_repeat": 2,
        "judge": {"type": "t", "nme": "x"},
        "refs": [{"type": "t", "name": "n", "extra_field": 1}],
        "by_name": {"a": {"typ": "t", "name": "n"}},
        "free_form": {"whatever": 1},
        "anything": {"goes": 1},
        "timeout_s": 3,
        "description": "metadata",
    }
    found = find_unknown_keys(Settings, data, prefix="srv", also_known={"description"})
    assert [(key.path, key.suggestion) for key in found] == [
        ("srv.num_repeat", "srv.num_repeats"),
        ("srv.judge.nme", "srv.judge.name"),
        ("srv.refs[0].extra_field", None),
        ("srv.by_name.a.typ", "srv.by_name.a.type"),
    ]
    assert describe_unknown_keys(found[:1]) == "unknown parameter 'srv.num_repeat'; did you mean 'srv.num_repeats'?"
    assert (
        describe_unknown_keys(found[2:3]) == "unknown parameter 'srv.refs[0].extra_field'; expected one of: type, name"
    )


def test_unset_reference_names_the_file_and_the_missing_env_yaml(tmp_path):
    write(tmp_path / "am.yaml", AGENT_AND_MODEL.replace("policy_base_url: https://api.example.com/v1\n", ""))
    write(tmp_path / "res.yaml", RESOURCES)
    with pytest.raises(ConfigInterpolationError) as info:
        load(tmp_path, "+config_paths=[res.yaml,am.yaml]")
    message = str(info.value)
    assert message.startswith("`policy_model.responses_api_models.openai_model.openai_base_url` (set in am.yaml)")
    assert "${policy_base_url}" in message and f"looked for {tmp_path / 'env.yaml'}" in message


def test_sources_say_who_set_a_value_last(tmp_path):
    write(tmp_path / "res.yaml", RESOURCES)
    write(tmp_path / "env.yaml", "policy_model_name: from-env\n")
    cfg = load(tmp_path, "+config_paths=[res.yaml]", "+my_res.resources_servers.my_impl.greeting=cli")
    assert cfg.sources.origin("my_res.resources_servers.my_impl.greeting") == "the command line"
    assert cfg.sources.origin("my_res.resources_servers.my_impl.domain") == str(tmp_path / "res.yaml")
    assert cfg.sources.origin("policy_model_name") == str(tmp_path / "env.yaml")
    assert cfg.sources.origin("nowhere") is None


def test_secret_values_include_credentials_inside_urls():
    from nemo_gym.config import secret_values

    found = secret_values({"base_url": "http://user:KEY123@host/v1", "mirror": ["ssh://git@h"], "api_key": "sk-1"})
    assert found == {"KEY123", "sk-1"}
