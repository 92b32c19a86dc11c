"""NeMo Gym's other commands, here with its parameters: ng_prepare_data, ng_materialize_prompts,
ng_reward_profile, ng_version, ng_status, ng_aggregate_rollouts, ng_test_all, and the `gym` router."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi import FastAPI

from nemo_gym.cli import (
    aggregate_rollouts,
    collect,
    env_test_all,
    gym,
    materialize_prompts,
    prepare_data,
    reward_profile,
    status,
    version,
)
from nemo_gym.client import ServerInfo
from nemo_gym.servers.head import HeadServer, Registry
from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from nemo_gym.testing.scripted_openai import ScriptedOpenAI
from resources_servers.example_single_tool_call.app import ExampleSingleToolCallConfig, ExampleSingleToolCallServer
from responses_api_agents.simple_agent.app import SimpleAgent, SimpleAgentConfig

ENV = "example_single_tool_call"


def run(main, *argv: str) -> int:
    with pytest.raises(SystemExit) as stopped:
        main(list(argv))
    return int(stopped.value.code or 0)


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def task(question: str, **fields) -> dict:
    return {"responses_create_params": {"input": [{"role": "user", "content": question}], "temperature": 0.5}} | fields


# ng_prepare_data ------------------------------------------------------------------------------------------


def write_env_config(tmp_path: Path, data: Path, num_repeats: int = 2) -> Path:
    config = tmp_path / "my_env.yaml"
    config.write_text(
        f"""
my_env:
  resources_servers:
    {ENV}:
      entrypoint: app.py
      domain: agent
my_env_agent:
  responses_api_agents:
    simple_agent:
      entrypoint: app.py
      resources_server: {{type: resources_servers, name: my_env}}
      model_server: {{type: responses_api_models, name: policy_model}}
      datasets:
        - {{name: example, type: example, jsonl_fpath: {data}, num_repeats: {num_repeats}}}
"""
    )
    return config


def prepare(tmp_path: Path, config: Path, *extra: str) -> int:
    paths = f"+config_paths=[{config},responses_api_models/openai_model/configs/openai_model.yaml]"
    return run(prepare_data.main, paths, f"+output_dirpath={tmp_path / 'out'}", "+mode=example_validation", *extra)


def test_prepare_data_writes_per_field_metrics_and_collates_with_agent_refs(tmp_path, capsys):
    data = jsonl(
        tmp_path / "example.jsonl",
        [
            task("a", level=1, topic="x", ok=True),
            task("b", level=3, topic="y", ok=False),
            task("c", level=2, topic="x"),
        ],
    )
    # No policy_* anywhere: looking at data needs no model, as in NeMo Gym.
    assert prepare(tmp_path, write_env_config(tmp_path, data)) == 0, capsys.readouterr().err

    metrics = json.loads((tmp_path / "example_metrics.json").read_text())
    assert metrics["name"] == "example" and metrics["num_repeats"] == 2 and metrics["license"] is None
    assert metrics["Number of examples"] == 6  # 3 rows, each counted twice
    assert metrics["Number of turns"] == {
        "Total # non-null values": 6,
        "Average": 1.0,
        "Min": 1.0,
        "Max": 1.0,
        "Standard deviation": 0.0,
    }
    assert metrics["Temperature"]["Average"] == 0.5 and metrics["Number of tools"]["Total # non-null values"] == 0
    assert metrics["level"]["Average"] == 2.0 and metrics["level"]["Min"] == 1.0 and metrics["level"]["Max"] == 3.0
    assert metrics["level"]["Standard deviation"] == 0.894  # sample deviation of 1,1,3,3,2,2, 3 decimals below 1
    assert metrics["topic"] == {"unique_count": 2, "total_count": 6}
    assert metrics["ok"]["Total # non-null values"] == 4 and metrics["ok"]["Average"] == 0.5  # booleans count 0/1

    rows = read_jsonl(tmp_path / "out" / "example.jsonl")
    assert [row["responses_create_params"]["input"][0]["content"] for row in rows] == ["a", "a", "b", "b", "c", "c"]
    assert all(row["agent_ref"] == {"type": "responses_api_agents", "name": "my_env_agent"} for row in rows)
    assert json.loads((tmp_path / "out" / "example_metrics.json").read_text())["Number of examples"] == 6


def test_prepare_data_stops_on_stale_metrics_and_on_bad_rows(tmp_path, capsys):
    data = jsonl(tmp_path / "example.jsonl", [task("a", level=1), task("b", level=3)])
    config = write_env_config(tmp_path, data, num_repeats=1)
    assert prepare(tmp_path, config) == 0
    assert prepare(tmp_path, config) == 0  # stored figures agree with the data: up to date
    assert "up to date" in capsys.readouterr().out

    jsonl(data, [task("a", level=1), task("b", level=30)])  # the data changed, the stored metrics did not
    (tmp_path / "out" / "example.jsonl").unlink()
    assert prepare(tmp_path, config) == 2
    err = capsys.readouterr().err
    assert "stored metrics disagree" in err and "example_metrics_conflict.json" in err
    assert json.loads((tmp_path / "example_metrics_conflict.json").read_text())["level"]["Max"] == 30.0
    assert json.loads((tmp_path / "example_metrics.json").read_text())["level"]["Max"] == 3.0  # kept
    assert not (tmp_path / "out" / "example.jsonl").exists()  # nothing collated
    assert prepare(tmp_path, config, "+overwrite_metrics_conflicts=true") == 0
    assert json.loads((tmp_path / "example_metrics.json").read_text())["level"]["Max"] == 30.0

    data.write_text(json.dumps(task("a")) + "\n{not json\n" + json.dumps({"question": "no params"}) + "\n")
    assert prepare(tmp_path, config, "+overwrite_metrics_conflicts=true") == 2
    captured = capsys.readouterr()
    assert f"{data}:2: not valid JSON" in captured.out and f"{data}:3: missing required field" in captured.out
    assert "2 invalid row(s)" in captured.err and "Traceback" not in captured.err


# ng_materialize_prompts -----------------------------------------------------------------------------------


def test_materialize_prompts_builds_inputs_and_never_overwrites(tmp_path, capsys):
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text('system: Be brief.\nuser: "Solve: {question}"\n')
    raw = jsonl(tmp_path / "raw.jsonl", [{"question": "1+1", "answer": "2"}, {"question": "2+2", "answer": "4"}])
    out = tmp_path / "rendered.jsonl"
    args = (f"+input_jsonl_fpath={raw}", f"+prompt_config={prompt}", f"+output_jsonl_fpath={out}")
    assert run(materialize_prompts.main, *args) == 0
    rows = read_jsonl(out)
    assert rows[1]["responses_create_params"]["input"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Solve: 2+2"},
    ]
    assert rows[0]["answer"] == "2" and rows[0]["prompt_config_used"] == str(prompt.resolve())

    assert run(materialize_prompts.main, *args) == 2
    assert "already exists; pass +overwrite=true" in capsys.readouterr().err
    assert run(materialize_prompts.main, *args[:2], f"+output_jsonl_fpath={raw}", "+overwrite=true") == 2
    assert "is the input file" in capsys.readouterr().err
    assert read_jsonl(raw)[0] == {"question": "1+1", "answer": "2"}


# ng_reward_profile ----------------------------------------------------------------------------------------


def rollout(task_index: int, rollout_index: int, reward: float, tokens: int) -> dict:
    return {
        "_ng_task_index": task_index,
        "_ng_rollout_index": rollout_index,
        "agent_ref": {"type": "responses_api_agents", "name": "agent"},
        "reward": reward,
        "response": {"output": [], "usage": {"total_tokens": tokens}},
    }


def test_reward_profile_gives_per_task_and_per_agent_statistics(tmp_path, capsys):
    inputs = jsonl(
        tmp_path / "run_materialized_inputs.jsonl",
        [task(q, _ng_task_index=t, _ng_rollout_index=r) for t, q in enumerate("ab") for r in range(2)],
    )
    rollouts = jsonl(
        tmp_path / "run.jsonl",
        [rollout(1, 1, 0.0, 10), rollout(0, 0, 1.0, 20), rollout(0, 1, 0.0, 40), rollout(1, 0, 0.0, 30)],
    )
    args = (f"+materialized_inputs_jsonl_fpath={inputs}", f"+rollouts_jsonl_fpath={rollouts}")
    assert run(reward_profile.main, *args) == 0
    assert "Reward profile completion: 4/4 rollout rows (100.00%)" in capsys.readouterr().out

    groups = read_jsonl(tmp_path / "run_reward_profiling.jsonl")
    assert [group["_ng_task_index"] for group in groups] == [0, 1]
    assert groups[0]["mean/reward"] == 0.5 and groups[0]["max/total_tokens"] == 40
    assert groups[1]["mean/reward"] == 0.0 and groups[1]["std/reward"] == 0.0
    assert groups[0]["sample"]["responses_create_params"]["input"][0]["content"] == "a"
    assert groups[0]["num_rollouts"] == groups[0]["expected_num_rollouts"] == 2
    assert [info["rollout_id"] for info in groups[1]["rollout_infos"]] == ["1:0", "1:1"]
    (agent,) = json.loads((tmp_path / "run_agent_metrics.json").read_text())
    assert (
        agent["agent_ref"] == {"name": "agent"} and agent["mean/reward"] == 0.25 and agent["median/total_tokens"] == 25
    )

    jsonl(rollouts, [rollout(0, 0, 1.0, 20)])  # a cut-short run
    assert run(reward_profile.main, *args) == 2
    assert "3 materialized input(s) have no rollout" in capsys.readouterr().err
    assert run(reward_profile.main, *args, "+allow_partial_rollouts=true") == 0
    assert "1/4 rollout rows (25.00%)" in capsys.readouterr().out
    assert read_jsonl(tmp_path / "run_reward_profiling.jsonl")[0]["missing_num_rollouts"] == 1


# ng_version -----------------------------------------------------------------------------------------------


def test_version_prints_the_toolkit_and_machine(capsys):
    assert run(version.main, "+json=true") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["nemo_gym"] == __import__("nemo_gym").__version__ and info["system"]["cpus"] >= 1
    assert set(info["dependencies"]) >= {"openai", "ray"}
    assert run(version.main, "+jsn=true") == 2
    assert "did you mean" in capsys.readouterr().err


# ng_status and ng_aggregate_rollouts (a head server in this process) --------------------------------------


def start_head(rows: list[ServerInfo]) -> HeadServer:
    head = HeadServer(Registry(rows), "127.0.0.1", free_port())
    head.start()
    deadline = time.monotonic() + 30
    while not head.started:
        assert time.monotonic() < deadline and not head.failed, "head server did not start"
        time.sleep(0.01)
    return head


def test_status_lists_servers_and_their_health(capsys):
    app = FastAPI()
    app.get("/health")(lambda: {"status": "ok"})
    with ThreadedServer(app) as alive:
        rows = [
            ServerInfo(name="alive", server_type="resources_servers", implementation="x", url=alive.url, pid=None),
            ServerInfo(
                name="gone",
                server_type="responses_api_models",
                implementation="y",
                url=f"http://127.0.0.1:{free_port()}",
            ),
        ]
        head = start_head(rows)
        try:
            assert run(status.main, f"+head_server.port={head.port}") == 1  # one server does not answer
            out = capsys.readouterr().out
            assert "ok   alive (resources_servers/x)" in out and "DOWN gone" in out
            assert "2 servers found (1 healthy, 1 unhealthy)" in out
            assert run(status.main, f"+head_server.port={head.port}", "+json=true") == 1
            by_name = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
            assert by_name["alive"]["status"] == "success" and by_name["gone"]["status"] == "connection_error"
        finally:
            head.stop()
    assert run(status.main, f"+head_server.port={free_port()}") == 1
    assert "no head server answers" in capsys.readouterr().err


@pytest.fixture(scope="module")
def agent_url():
    """example_single_tool_call behind our simple agent (whose /aggregate_metrics asks the environment)."""
    with ScriptedOpenAI() as upstream:
        resources = ExampleSingleToolCallServer(
            config=ExampleSingleToolCallConfig(name=ENV), server_client=registry_client({})
        )
        with ThreadedServer.of(resources) as resources_running:
            agent = SimpleAgent(
                config=SimpleAgentConfig(
                    name="agent",
                    resources_server={"type": "resources_servers", "name": ENV},
                    model_server={"type": "responses_api_models", "name": "policy_model"},
                ),
                server_client=registry_client(
                    {
                        ENV: ("resources_servers", resources_running.url),
                        "policy_model": ("responses_api_models", upstream.url.removesuffix("/v1")),
                    }
                ),
            )
            with ThreadedServer.of(agent) as agent_running:
                yield agent_running.url


def test_aggregate_rollouts_merges_shards_and_asks_the_agent_over_all_of_them(agent_url, tmp_path, capsys):
    jsonl(tmp_path / "run-shard0.jsonl", [rollout(1, 0, 1.0, 10), rollout(0, 0, 1.0, 20)])
    jsonl(tmp_path / "run-shard1.jsonl", [rollout(0, 1, 0.0, 30), rollout(1, 1, 1.0, 40)])
    head = start_head([ServerInfo(name="agent", server_type="responses_api_agents", implementation="s", url=agent_url)])
    output = tmp_path / "run.jsonl"
    try:
        args = (f"+head_server.port={head.port}", f"+input_glob={tmp_path}/run-shard*.jsonl")
        assert run(aggregate_rollouts.main, *args, f"+output_jsonl_fpath={output}") == 0, capsys.readouterr().err
        assert "Key metrics for agent: mean/reward 0.75" in capsys.readouterr().out
        merged = read_jsonl(output)
        assert [(r["_ng_task_index"], r["_ng_rollout_index"]) for r in merged] == [(0, 0), (0, 1), (1, 0), (1, 1)]
        (entry,) = json.loads((tmp_path / "run_aggregate_metrics.json").read_text())
        assert entry["agent_ref"] == {"name": "agent"} and entry["agent_metrics"]["mean/reward"] == 0.75
        # Each task's rollouts came from two shards and are aggregated together.
        assert [group["num_rollouts"] for group in entry["group_level_metrics"]] == [2, 2]

        assert run(aggregate_rollouts.main, *args, f"+output_jsonl_fpath={output}") == 2  # never overwritten silently
        assert (
            run(aggregate_rollouts.main, *args, f"+output_jsonl_fpath={tmp_path}/run-shard1.jsonl", "+overwrite=true")
            == 2
        )
        assert "is one of the shards" in capsys.readouterr().err
        assert len(read_jsonl(tmp_path / "run-shard1.jsonl")) == 2
    finally:
        head.stop()
    assert run(aggregate_rollouts.main, f"+input_glob={tmp_path}/nothing*.jsonl", f"+output_jsonl_fpath={output}") == 2


# ng_test_all ----------------------------------------------------------------------------------------------


def test_test_all_runs_every_folder_with_a_readme_and_summarizes(tmp_path, monkeypatch, capsys):
    (tmp_path / "nemo_gym").mkdir()  # marks tmp_path as a project root
    good = tmp_path / "resources_servers" / "good"
    (good / "tests").mkdir(parents=True)
    (good / "data").mkdir()
    (good / "README.md").write_text("good\n")
    (good / "tests" / "test_app.py").write_text("def test_ok():\n    assert True\n")
    tasks = [task(f"q{i}") for i in range(5)]
    jsonl(good / "data" / "example.jsonl", tasks)
    jsonl(
        good / "data" / "example_rollouts.jsonl",
        [t | {"reward": 1.0, "_ng_task_index": i} for i, t in enumerate(tasks)],
    )
    bad = tmp_path / "responses_api_agents" / "bad"
    (bad / "tests").mkdir(parents=True)
    (bad / "README.md").write_text("bad\n")
    (bad / "tests" / "test_app.py").write_text("def test_broken():\n    assert False\n")
    (tmp_path / "responses_api_models" / "no_readme").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)

    assert run(env_test_all.main) == 1
    out = capsys.readouterr().out
    assert "Found 3 folders, 2 with a README.md; testing 2" in out
    assert "Tests passed 1 / 2 (50.00%):\n  - resources_servers/good" in out
    assert "Tests failed 1 / 2 (50.00%):\n  - responses_api_agents/bad" in out
    assert "Data validation failed 0 / 2" in out
    assert "ng_test +entrypoint=responses_api_agents/bad" in out

    (bad / "README.md").unlink()
    assert run(env_test_all.main) == 0
    assert run(env_test_all.main, "+fail_on_total_and_test_mismatch=true") == 1
    assert "2 folder(s) have no README.md" in capsys.readouterr().out


# gym / ng -------------------------------------------------------------------------------------------------


def test_gym_router_maps_nemo_gym_07_commands_and_flags_onto_ours(tmp_path, capsys):
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text('user: "Q: {question}"\n')
    raw = jsonl(tmp_path / "raw.jsonl", [{"question": "hi"}])
    out = tmp_path / "out.jsonl"
    assert run(gym.main, "dataset", "render", "-i", str(raw), f"--prompt-config={prompt}", "-o", str(out)) == 0
    assert read_jsonl(out)[0]["responses_create_params"]["input"] == [{"role": "user", "content": "Q: hi"}]
    capsys.readouterr()

    assert run(gym.main, "--version", "--json") == 0
    assert json.loads(capsys.readouterr().out)["nemo_gym"]
    assert run(gym.main, "eval", "runn") == 2
    assert "did you mean `gym eval run`?" in capsys.readouterr().err
    assert run(gym.main, "eval", "run", "--agnt", "x") == 2
    assert "unknown flag --agnt; did you mean --agent?" in capsys.readouterr().err
    assert gym.translate(
        gym.COMMANDS["eval run"], ["--config", "a.yaml", "+config_paths=[b.yaml]", "-a", "ag", "--resume"]
    ) == [
        "+config_paths=[a.yaml,b.yaml]",
        "+agent_name=ag",
        "+resume_from_cache=true",
    ]
    assert gym.resolve(["env", "test"])[1].choose(["+entrypoint=resources_servers/x"]) == "env_test"
    assert gym.resolve(["env", "test"])[1].choose([]) == "env_test_all"


def test_gym_eval_run_takes_nemo_gym_07s_flags_with_their_meaning(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks" / "aime24").mkdir(parents=True)
    (tmp_path / "benchmarks" / "aime24" / "config.yaml").write_text("{}\n")
    (tmp_path / "benchmarks" / "aime24" / "x.yaml").write_text("{}\n")
    (tmp_path / "environments" / "blackjack").mkdir(parents=True)
    (tmp_path / "environments" / "blackjack" / "config.yaml").write_text("{}\n")
    # Every flag of NeMo Gym 0.7's `gym eval run`, each onto the ng_collect_rollouts parameter of the same meaning.
    argv = [
        "--config", "a.yaml", "--benchmark", "aime24", "--benchmark", "aime24/x", "--environment", "blackjack",
        "--resources-server", "example_single_tool_call", "--model-type", "openai_model", "--no-serve", "--resume",
        "-a", "ag", "-i", "in.jsonl", "-o", "out.jsonl", "--limit", "5", "--num-repeats", "4",
        "--prompt-config", "p.yaml", "--concurrency", "8", "--split", "validation", "-m", "gpt", "--model-url",
        "http://h/v1", "--model-api-key", "sk-1", "--temperature", "0.7", "--top-p", "0.9",
        "--max-output-tokens", "64", "--disable-aggregation",
    ]  # fmt: skip
    assert gym.translate(gym.COMMANDS["eval run"], argv) == [
        "+config_paths=[a.yaml,benchmarks/aime24/config.yaml,benchmarks/aime24/x.yaml,"
        "environments/blackjack/config.yaml,resources_servers/example_single_tool_call/configs/"
        "example_single_tool_call.yaml,responses_api_models/openai_model/configs/openai_model.yaml]",
        "+no_serve=true",
        "+resume_from_cache=true",
        "+agent_name=ag",
        "+input_jsonl_fpath=in.jsonl",
        "+output_jsonl_fpath=out.jsonl",
        "+limit=5",
        "+num_repeats=4",
        "+prompt_config=p.yaml",
        "+num_samples_in_parallel=8",
        "+split=validation",
        "+policy_model_name=gpt",
        "+policy_base_url=http://h/v1",
        "+policy_api_key=sk-1",
        "+responses_create_params.temperature=0.7",
        "+responses_create_params.top_p=0.9",
        "+responses_create_params.max_output_tokens=64",
        "+disable_aggregation=true",
    ]
    # Each translated parameter is one ng_collect_rollouts reads (an unread one would be refused as a typo).
    read = set(collect.CollectRolloutsConfig.model_fields) | {"config_paths", "policy_model_name"}
    read |= {"policy_base_url", "policy_api_key"}
    assert {
        token.lstrip("+").split("=")[0].split(".")[0] for token in gym.translate(gym.COMMANDS["eval run"], argv)
    } <= read
    capsys.readouterr()
    # What is not a flag of the command, or names no config, is one line and exit 2.
    for bad, says in [
        (["--frobnicate", "1"], "unknown flag --frobnicate"),
        (["--benchmark", "aime25"], "--benchmark aime25: no config file benchmarks/aime25/config.yaml"),
        (["--search-dir", "extra"], "--search-dir extra: extra component roots are not supported here"),
        (["--split"], "--split needs a value"),
    ]:
        assert run(gym.main, "eval", "run", *bad) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def write_split_config(tmp_path: Path, train: Path) -> Path:
    config = tmp_path / "split_env.yaml"
    config.write_text(
        f"""
my_env:
  resources_servers:
    {ENV}:
      entrypoint: app.py
      domain: agent
my_env_agent:
  responses_api_agents:
    simple_agent:
      entrypoint: app.py
      resources_server: {{type: resources_servers, name: my_env}}
      model_server: {{type: responses_api_models, name: policy_model}}
      datasets:
        - {{name: tiny, type: train, jsonl_fpath: {train}, num_repeats: 2}}
"""
    )
    return config


def test_gym_eval_run_split_collects_on_the_collated_split_of_the_config(agent_url, tmp_path, capsys):
    row = read_jsonl(Path("resources_servers") / ENV / "data" / "example.jsonl")[0]
    train = jsonl(tmp_path / "train.jsonl", [row | {"n": 1}, row | {"n": 2}])
    config = write_split_config(tmp_path, train)
    head = start_head(
        [ServerInfo(name="my_env_agent", server_type="responses_api_agents", implementation="s", url=agent_url)]
    )
    output = tmp_path / "results" / "run.jsonl"
    model = ["-m", "m", "--model-url", "http://127.0.0.1:9/v1", "--model-api-key", "sk-test"]
    common = ["--config", str(config), "--model-type", "openai_model", *model, f"+head_server.port={head.port}"]
    try:
        code = run(gym.main, "eval", "run", *common, "--no-serve", "--split", "train", "-o", str(output))
        assert code == 0, capsys.readouterr().err
        collated = tmp_path / "results" / "run" / "preprocessed_datasets" / "train.jsonl"
        assert [r["n"] for r in read_jsonl(collated)] == [1, 2]  # each row once: the collection repeats it
        rows = read_jsonl(output)
        assert sorted(r["n"] for r in rows) == [1, 1, 2, 2] and all(r["reward"] == 1.0 for r in rows)
        assert all(r["agent_ref"]["name"] == "my_env_agent" for r in rows)  # the agent that owns the set
        # NeMo Gym folds a row's num_repeats copies into one task: one group of 2 per row, as here.
        pairs = sorted((r["n"], r["_ng_task_index"], r["_ng_rollout_index"], r["_ng_group_size"]) for r in rows)
        assert pairs == [(1, 0, 0, 2), (1, 0, 1, 2), (2, 1, 0, 2), (2, 1, 1, 2)]
        assert "2 tasks, each run 2 times" in capsys.readouterr().err
        # +num_repeats multiplies the sets' own repeats, as NeMo Gym's repeats of the folded task do.
        again = tmp_path / "results" / "again.jsonl"
        assert (
            run(gym.main, "eval", "run", *common, "--no-serve", "--split", "train", "-o", str(again), "+num_repeats=2")
            == 0
        )
        assert sorted(r["_ng_rollout_index"] for r in read_jsonl(again) if r["n"] == 1) == [0, 1, 2, 3]
        capsys.readouterr()

        both = ["--split", "train", "-i", str(train), "-o", str(tmp_path / "b.jsonl")]
        assert run(gym.main, "eval", "run", *common, "--no-serve", *both) == 2
        assert "+split=train and +input_jsonl_fpath both name the tasks" in capsys.readouterr().err
        none = ["--split", "benchmark", "-o", str(tmp_path / "c.jsonl")]
        assert run(gym.main, "eval", "run", *common, "--no-serve", *none) == 2
        assert "+split=benchmark: no agent in the config has a benchmark data set" in capsys.readouterr().err
    finally:
        head.stop()
    # --no-serve never starts the configured servers: with none running it says so instead.
    rest = ["-a", "my_env_agent", "-i", str(train), "-o", str(tmp_path / "d.jsonl")]
    assert run(gym.main, "eval", "run", *common, "--no-serve", *rest) == 1
    assert "--no-serve" in capsys.readouterr().err


def test_collect_accepts_nemo_gyms_deprecated_upload_rollouts_to_wandb(tmp_path, capsys):
    tasks = jsonl(tmp_path / "tasks.jsonl", [task("a")])
    args = [f"+input_jsonl_fpath={tasks}", f"+output_jsonl_fpath={tmp_path / 'out.jsonl'}", "+agent_name=a"]
    # Read as a parameter (no exporters here, so nothing is uploaded): the run gets as far as the head server.
    assert run(collect.main, *args, "+upload_rollouts_to_wandb=false", f"+head_server.port={free_port()}") == 1
    err = capsys.readouterr().err
    assert "cannot reach the head server" in err and "upload_rollouts_to_wandb" not in err


def test_gym_eval_run_split_refuses_sets_that_repeat_differently(tmp_path, capsys):
    row = read_jsonl(Path("resources_servers") / ENV / "data" / "example.jsonl")[0]
    train = jsonl(tmp_path / "train.jsonl", [row])
    other = jsonl(tmp_path / "other.jsonl", [row | {"n": 3}])
    config = write_split_config(tmp_path, train)
    config.write_text(
        config.read_text() + f"        - {{name: other, type: train, jsonl_fpath: {other}, num_repeats: 3}}\n"
    )
    model = ["-m", "m", "--model-url", "http://127.0.0.1:9/v1", "--model-api-key", "sk-test"]
    argv = ["--config", str(config), "--model-type", "openai_model", *model, "--no-serve", "--split", "train"]
    output = tmp_path / "out.jsonl"
    assert run(gym.main, "eval", "run", *argv, "-o", str(output)) == 2
    err = capsys.readouterr().err
    assert "the train data sets repeat their rows differently (my_env_agent/tiny: 2, my_env_agent/other: 3)" in err
    assert len(err.strip().splitlines()) == 1 and not output.exists()


def eval_run_on(agent_url: str, tasks: Path, tmp_path: Path) -> list[dict]:
    """`gym eval run --no-serve` of `tasks` on the running agent; the rows it wrote."""
    head = start_head(
        [ServerInfo(name="my_env_agent", server_type="responses_api_agents", implementation="s", url=agent_url)]
    )
    output = tmp_path / "out.jsonl"
    argv = ["-a", "my_env_agent", "-i", str(tasks), "-o", str(output), f"+head_server.port={head.port}"]
    try:
        assert run(gym.main, "eval", "run", "--no-serve", *argv) == 0
    finally:
        head.stop()
    return read_jsonl(output)


def test_identical_consecutive_lines_fold_into_one_task_whatever_the_run_lengths(agent_url, tmp_path, capsys):
    row = read_jsonl(Path("resources_servers") / ENV / "data" / "example.jsonl")[0]
    tasks = jsonl(tmp_path / "tasks.jsonl", [row, row, row | {"n": 2}, row])  # one repeat of the line before
    rows = eval_run_on(agent_url, tasks, tmp_path)
    err = capsys.readouterr().err
    assert f"1 line(s) of {tasks} repeat the line before them" in err
    assert "Identical lines apart from each other stay tasks of their own" in err
    # The run of two is one task of 2 rollouts; the last line, identical to the first but apart, is its own.
    pairs = sorted((r["_ng_task_index"], r["_ng_rollout_index"], r["_ng_group_size"]) for r in rows)
    assert pairs == [(0, 0, 2), (0, 1, 2), (1, 0, 1), (2, 0, 1)]


def test_data_collated_by_prepare_data_is_collected_as_nemo_gym_collects_it(agent_url, tmp_path, capsys):
    """ng_prepare_data writes each row num_repeats times in a row; collecting that file gives each row one
    task whose copies are its rollouts, one group, as NeMo Gym's collector does."""
    rows = read_jsonl(Path("resources_servers") / ENV / "data" / "example.jsonl")[:3]
    assert prepare(tmp_path, write_env_config(tmp_path, jsonl(tmp_path / "example.jsonl", rows), num_repeats=2)) == 0
    collated = tmp_path / "out" / "example.jsonl"
    assert len(read_jsonl(collated)) == 6

    collected = eval_run_on(agent_url, collated, tmp_path)

    assert "lines are written 2 times in a row" in capsys.readouterr().err
    pairs = sorted((r["_ng_task_index"], r["_ng_rollout_index"]) for r in collected)
    assert pairs == [(t, r) for t in range(3) for r in range(2)]
    assert {r["_ng_group_size"] for r in collected} == {2}
    by_task = {r["_ng_task_index"]: r["responses_create_params"]["input"] for r in collected}
    assert [by_task[t] for t in range(3)] == [row["responses_create_params"]["input"] for row in rows]
    groups = read_jsonl(tmp_path / "out_groups.jsonl")
    assert [(g["_ng_task_index"], g["complete"]) for g in groups] == [(0, True), (1, True), (2, True)]


def test_rows_that_carry_their_own_task_index_are_told_it_is_replaced(agent_url, tmp_path, capsys):
    row = read_jsonl(Path("resources_servers") / ENV / "data" / "example.jsonl")[0]
    tasks = jsonl(tmp_path / "tasks.jsonl", [row | {"_ng_task_index": 7}, row | {"_ng_task_index": 9, "n": 1}])
    rows = eval_run_on(agent_url, tasks, tmp_path)
    err = capsys.readouterr().err
    assert f"Rows of {tasks} carry their own _ng_task_index, which NeMo Gym keeps; here tasks are numbered" in err
    assert sorted(r["_ng_task_index"] for r in rows) == [0, 1]
