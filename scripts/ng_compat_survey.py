"""How many NeMo Gym environment folders run here unchanged, with NeMo Gym's reward on NeMo Gym's rows.

    python scripts/ng_compat_survey.py <path to a NeMo Gym checkout> [--only a,b] [--jobs 2] [--json out.json]
        [--reference-venv <venv where NeMo Gym itself is installed>]

For each folder under `<checkout>/resources_servers/`, in a temporary copy of this project (our
`nemo_gym/`, model and agent folders and `pyproject.toml` linked in, the environment folder copied
unchanged into `resources_servers/<name>/`), with this interpreter and no network:

0. copies beside it the agent folders its YAMLs name (`responses_api_agents/<x>/`, unless we have our
   own of that name, as for `simple_agent`) and the checkout's folders that it or those agents import
   (`resources_servers.<x>`, such as the gymnasium base; `responses_api_agents.<x>`), and the other
   checkout files its YAMLs or its tests name by relative path (a prompt under `benchmarks/<x>/`, a
   docs page under `fern/`);
1. reads its own YAML (`configs/<name>.yaml`, else its first config) and classifies it: `offline`,
   `judge` (a model server ref other than the policy, or judge_* URL/key/model keys) or `external`
   (API keys other than a judge's, a sandbox/docker/container, remote URLs): see `classify()`; an
   environment `ng_run` refuses for an unset required config field named like a credential
   (`google_api_key: Field required`) is external too, and one whose tests, import or start fail on a
   download (a name lookup, a git clone, the Hub in offline mode) is counted apart as needing the network;
2. lists the requirements of its `requirements.txt` that are not installed (`--install` runs pip for them);
3. imports the entrypoints its YAML runs (`app.py` by default) as `ng_run` would (from its folder);
4. runs its own tests with pytest from its folder (counts from pytest's JUnit XML);
5. starts it with our `ng_run` on its own YAML, the policy and every judge (each model server the YAML
   defines: an openai_model gets the scripted URL, key and model; any other implementation is replaced,
   and model refs to instances nothing defines go to a scripted judge) pointed at a scripted
   OpenAI-compatible server on loopback that answers every judge prompt with a plausible verdict (an
   object of the schema asked for, when a judge asks for structured output);
6. posts each row of its `data/example_rollouts.jsonl` to its `/verify` (after `/seed_session`), laid
   over its task row (found by input: messages, images and files) when the rollout does not repeat the
   task fields (a rollout without its request, as bbq's, by a shared id such as `provenance_id`, its
   `policy_response` text taken as the response), and compares the reward with the stored one. With
   `--reference-venv`, rows whose reward differs are scored again by NeMo Gym's current code
   (scripts/ng_reference_verify.py): a stale stored reward it agrees with ours on is reported apart,
   never counted in the matches. A row whose task is in no `data/*.jsonl`
   and which lacks fields the verify request requires cannot be re-verified (NeMo Gym's own `/verify`
   answers it 422 too): it is counted as `no task` and left out of the match ratio; with
   `--reference-venv` it is paired with the task row at its position in the YAML's example data file
   (task row i + stored response i) and scored by NeMo Gym's current code and by our /verify, their
   agreement reported in the `ngym now` column, never as a stored-reward match. An environment
   scored by its agent instead (NeMo Gym's gymnasium family: `/reset` and `/step`, no `/verify`) has
   each stored rollout replayed through the agent's `/run`, the scripted model answering with that
   rollout's own model turns (the actions of its `trajectory` when that records more steps than its
   response holds); a replay whose reward differs is replayed again, and when replays of the same turns
   give different rewards or observations the row is `unseeded` (the environment's own code draws from
   an unseeded generator) and left out of the match ratio; a row that differs (or is refused) the same
   way on every replay is replayed again in up to three fresh `ng_run` processes, since some draw once per process;
   a stored row without a `response` (a task row), or a file of placeholders (then the task rows of
   `data/*.jsonl`), is run through its agent's `/run` instead (as many times at once as a cohort
   environment's `num_rollouts_per_prompt`, genrm_compare's): it counts as verified, with no stored
   reward to match.

Every step has a deadline; on timeout the whole process group is killed; temporary projects are removed.
The table and totals go to stdout (then the interpreter environment's version conflicts, `pip check`),
progress to stderr, the raw results to `--json`.
Nothing from the checkout is kept: it is read from the path given on the command line.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.metadata
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from nemo_gym.free_ports import free_port  # noqa: E402
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn  # noqa: E402

# conftest.py too: a NeMo Gym folder copied into this project runs its tests under our root conftest.py.
# responses_api_agents is a folder of its own (ours linked, the checkout agents an environment names copied).
LINKED = ["nemo_gym", "responses_api_models", "pyproject.toml", "conftest.py"]
POLICY_CONFIG = "responses_api_models/openai_model/configs/openai_model.yaml"
SURVEY_JUDGE = "survey_judge_model"
READY_MARKER = "servers are up"
REWARD_TOLERANCE = 1e-6
MATCH_TARGET = 0.95
SECRET_ENV = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)
JUDGE_ANSWER = (
    "Both answers state the same final result, so they are equivalent.\n"
    "Judgement: Yes\nVerdict: CORRECT\n[[A=B]]\nScore: 1\n\\boxed{1}"
)


# ---- the scripted upstream (policy and judge) ---------------------------------------------------
def request_text(body: dict[str, Any]) -> str:
    """Every text a Responses or Chat Completions request carries (instructions, messages, parts)."""
    texts: list[str] = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    items = body.get("input") if "input" in body else body.get("messages")
    for item in [items] if isinstance(items, str) else items or []:
        content = item.get("content") if isinstance(item, dict) else item
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
    return "\n".join(texts)


# A positive verdict in the format a judge prompt asks for, when it asks for one our common answer
# does not contain (first match wins); else JUDGE_ANSWER, which holds the common verdict spellings.
VERDICT_FORMATS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r'return the letters? "A"', re.IGNORECASE), "A"),  # SimpleQA-style grader: A = correct
    (re.compile(r"only with CORRECT or INCORRECT", re.IGNORECASE), "CORRECT"),
    (re.compile(r'"result"\s*:\s*"?(PASS|FAIL)', re.IGNORECASE), '{"result": "PASS", "explanation": "It does."}'),
    (re.compile(r'"status"\s*:\s*"?(PASS|FAIL)', re.IGNORECASE), '{"definition": "as asked", "status": "PASS"}'),
    (re.compile(r"\[\[YES\]\] or \[\[NO\]\]"), "The response follows the instruction.\n[[YES]]"),
]


def requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks its answer to follow: Chat Completions' `response_format`
    (`{"type": "json_schema", "json_schema": {"schema": ...}}`) or Responses' `text.format`
    (`{"type": "json_schema", "schema": ...}`); None when it asks for none."""
    chat = body.get("response_format")
    if isinstance(chat, dict) and chat.get("type") == "json_schema" and isinstance(chat.get("json_schema"), dict):
        schema = chat["json_schema"].get("schema")
        return schema if isinstance(schema, dict) else None
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return fmt["schema"]
    return None


def schema_instance(schema: Any, root: dict[str, Any], depth: int = 0) -> Any:
    """A value that a (pydantic-made) JSON schema accepts: every property of an object, the first value
    of an enum, the first non-null branch of an anyOf, a short string, the minimum of a number, false.
    bbq's judge (constrained decoding) fails closed on any answer that is not one such object."""
    if not isinstance(schema, dict) or depth > 20:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return schema_instance(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combined in ("anyOf", "oneOf", "allOf"):
        branches = [branch for branch in schema.get(combined) or [] if isinstance(branch, dict)]
        usable = [branch for branch in branches if branch.get("type") != "null"] or branches
        if usable:
            return schema_instance(usable[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((entry for entry in kind if entry != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: schema_instance(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        return [schema_instance(schema.get("items") or {}, root, depth + 1) for _ in range(count)]
    if kind == "string":
        return "The response does what the task asks."
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = low + 1 if "exclusiveMinimum" in schema and "minimum" not in schema else low
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    return None


def scripted_turn(body: dict[str, Any]) -> Turn:
    """A sensible answer to whatever is asked: a JSON object following the schema the request asks for
    (structured outputs), else a positive verdict, in the format the prompt asks for when it names one
    (`VERDICT_FORMATS`), else one that common judge parsers read."""
    schema = requested_schema(body)
    if schema is not None:
        return Turn(text=json.dumps(schema_instance(schema, schema)))
    text = request_text(body)
    for pattern, answer in VERDICT_FORMATS:
        if pattern.search(text):
            return Turn(text=answer)
    return Turn(text=JUDGE_ANSWER)


# ---- reading an environment folder ---------------------------------------------------------------
def own_config(env_dir: Path) -> Path | None:
    """`configs/<name>.yaml`, else the first YAML under `configs/` (sorted), else None."""
    preferred = env_dir / "configs" / f"{env_dir.name}.yaml"
    if preferred.is_file():
        return preferred
    candidates = sorted((env_dir / "configs").glob("*.yaml")) if (env_dir / "configs").is_dir() else []
    return candidates[0] if candidates else None


def load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def instances_of(config: dict[str, Any], server_type: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Top-level instances of one server type: name -> (implementation, its config)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, block in config.items():
        if isinstance(block, dict) and isinstance(block.get(server_type), dict):
            for impl, body in block[server_type].items():
                found[name] = (impl, body if isinstance(body, dict) else {})
    return found


def walk(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every (key path, leaf or dict) in a YAML tree."""
    out: list[tuple[tuple[str, ...], Any]] = [(path, node)]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(walk(value, (*path, str(key))))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(walk(value, (*path, str(index))))
    return out


SCRIPTED_OPENAI_KEYS = ("openai_base_url", "openai_api_key", "openai_model")
INTERPOLATION = re.compile(r"\$\{([^}]+)\}")
PROSE_KEYS = {"description", "value", "license", "citation", "homepage", "url_reference", "paper"}
JUDGE_SWITCH = re.compile(r"use_.*judge|judge.*enabled", re.IGNORECASE)
SANDBOX_KEY = re.compile(r"sandbox|docker|container|_image$|harbor|opensandbox", re.IGNORECASE)


def model_refs(
    config: dict[str, Any], server_types: tuple[str, ...] = ("resources_servers",)
) -> list[tuple[tuple[str, ...], str]]:
    """(path, name) of every `{type: responses_api_models, name: ...}` below a resources server (or the
    server types given)."""
    refs = []
    for server_type in server_types:
        for instance, (impl, body) in instances_of(config, server_type).items():
            for path, node in walk(body, (instance, server_type, impl)):
                if isinstance(node, dict) and node.get("type") == "responses_api_models":
                    refs.append((path, str(node.get("name"))))
    return refs


DOC_HOSTS = re.compile(r"https?://([\w.-]*\.)?(wandb\.ai|github\.com|huggingface\.co|arxiv\.org|arcprize\.org)\b")
HF_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def service_signal(key: str, text: str) -> str | None:
    """Why one config value points outside this machine (`judge ...` for a judge model), or None."""
    lowered_key = key.lower()
    names = INTERPOLATION.findall(text)
    is_judge = "judge" in lowered_key or any("judge" in name.lower() for name in names)
    is_policy = any("policy" in name.lower() for name in names)
    if "api_key" in lowered_key or any("api_key" in name.lower() for name in names):
        if is_judge or is_policy:
            return f"judge key {key}"
        return None if text in ("", "None", "null") else f"api key {key}"
    if SANDBOX_KEY.search(key) or re.search(r"SANDBOX|DOCKER", text):
        return f"sandbox {key}"
    if re.match(r"https?://", text) and lowered_key not in PROSE_KEYS and not DOC_HOSTS.match(text):
        return f"judge url {key}" if is_judge else f"url {key}"
    if is_judge and any(part in lowered_key for part in ("base_url", "model_name", "judge_model")):
        return f"judge key {key}"
    if lowered_key.endswith("_model") and HF_REPO_ID.match(text):
        return f"model weights {key}={text}"
    return None


# An environment variable naming a sandbox service, read by the environment's own code
# (competitive_coding_challenges posts programs to a NeMo Skills sandbox at $NEMO_SKILLS_SANDBOX_HOST).
SANDBOX_ENV_READ = re.compile(r"""(?:getenv|environ\.get|environ)\s*[(\[]\s*["']([A-Z0-9_]*SANDBOX[A-Z0-9_]*)["']""")


def code_service_signals(env_dir: Path) -> list[str]:
    """Services the environment's code (tests aside) reaches through environment variables, not its YAML."""
    reasons = []
    for source in sorted(env_dir.rglob("*.py")):
        if "tests" in source.relative_to(env_dir).parts:
            continue
        for name in SANDBOX_ENV_READ.findall(source.read_text(errors="replace")):
            reasons.append(f"sandbox ${name} ({source.relative_to(env_dir)})")
    return reasons


def classify(config: dict[str, Any], env_dir: Path | None = None) -> tuple[str, list[str]]:
    """`external`, `judge` or `offline`, with the reasons found in the YAML (and in the code, given `env_dir`).

    external: an API key that is not a judge's or the policy's (search, finance, MCP providers), a
    sandbox/docker/container setting, or an http(s) URL that is not prose and not a judge's base URL;
    or code that reads a sandbox service's address from an environment variable.
    judge: a model server ref under a resources server (the policy's too: it is called as a judge) unless a
    `use_*judge*: false` switch turns it off, or judge_* keys naming a model, base URL or API key.
    Everything else is offline."""
    external: list[str] = []
    judge: list[str] = []
    for _instance, (_impl, body) in instances_of(config, "resources_servers").items():
        judge_switched_off = any(
            value is False and JUDGE_SWITCH.search(key) for key, value in body.items() if isinstance(key, str)
        )
        for path, node in walk(body):
            if isinstance(node, dict) and node.get("type") == "responses_api_models" and not judge_switched_off:
                judge.append(f"model ref {path[-1]}={node.get('name')}")
    # Every server the YAML defines (resources, agents, its own model servers) can need a service.
    for server_type in ("resources_servers", "responses_api_agents", "responses_api_models"):
        for instance, (_impl, body) in instances_of(config, server_type).items():
            if server_type == "responses_api_models":
                judge.append(f"defines model server {instance}")
            for path, node in walk(body):
                if isinstance(node, (dict, list)) or not path:
                    continue
                reason = service_signal(path[-1], "" if node is None else str(node))
                if reason is not None:
                    (judge if reason.startswith("judge") else external).append(reason)
    if env_dir is not None:
        external.extend(code_service_signals(env_dir))
    if external:
        return "external", sorted(set(external))
    if judge:
        return "judge", sorted(set(judge))
    return "offline", []


REQUIRED_FIELD = re.compile(r"([\w.]+): Field required")
CREDENTIAL_NAME = re.compile(r"api_?key|access_?key|_key$|token|secret|password|credential", re.IGNORECASE)


def missing_credentials(output: str) -> list[str]:
    """Config fields `ng_run` refused as required and unset (`<instance>.resources_servers.<impl>.<field>:
    Field required`) whose names say they hold a service's credential. google_search's YAML names no key,
    but its config class requires `google_api_key` (and `google_cx`): it calls Google's API, so it is an
    external environment, however offline its YAML looks."""
    found: list[str] = []
    for dotted in REQUIRED_FIELD.findall(output):
        name = dotted.rsplit(".", 1)[-1]
        if CREDENTIAL_NAME.search(name) and name not in found:
            found.append(name)
    return found


# ---- requirements ------------------------------------------------------------------------------
REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirements(path: Path) -> dict[str, str]:
    """Distribution name -> its requirement line, from a requirements.txt. Editable installs of NeMo
    Gym itself (`-e ...`) and pip options are skipped; a bare VCS URL is its own name (it cannot be
    looked up). Only presence is checked, not version specifiers: a different installed version is
    what a user who copies the folder here would run with."""
    if not path.is_file():
        return {}
    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        if line.startswith(("git+", "http://", "https://")):
            found[line] = line
            continue
        match = REQUIREMENT_NAME.match(line)
        if match:
            found[match.group(1)] = line
    return found


def is_installed(name: str) -> bool:
    if "://" in name:
        return False
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


# ---- processes ---------------------------------------------------------------------------------
def child_env(project: Path) -> dict[str, str]:
    """This environment minus anything that looks like a credential, offline, importing the temp project."""
    env = {key: value for key, value in os.environ.items() if not SECRET_ENV.search(key)}
    env["PYTHONPATH"] = str(project)
    env["HF_HUB_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("VIRTUAL_ENV_PROMPT", None)
    return env


def kill_group(process: subprocess.Popen[Any], first: int = signal.SIGINT, grace: float = 15.0) -> None:
    """Stop a process started in its own session, and everything it started: `first`, then SIGKILL."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, first)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group, even after the leader exited
    except ProcessLookupError:
        pass
    process.wait()


def run_bounded(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run to completion or kill its process group at the deadline; (exit code or None on timeout, output)."""
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        kill_group(process, signal.SIGTERM, grace=5)
        log.seek(0)
        return code, log.read()


def last_error_line(output: str) -> str:
    """The most telling line of a failure's output: the last exception-looking line, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^(E\s+)?[\w.]*(Error|Exception|Exit)\b", line) or "error:" in line.lower():
            return line.removeprefix("E").strip()[:160]
    return lines[-1][:160] if lines else ""


# ---- one environment ---------------------------------------------------------------------------
NETWORK_FAILURE = re.compile(
    r"Name or service not known|Temporary failure in name resolution|getaddrinfo failed|"
    r"git', 'clone'|git clone|huggingface\.co|Network is unreachable|No address associated with hostname|"
    # huggingface_hub/datasets under HF_HUB_OFFLINE=1 (the survey's): aviary's tests load 'openai/gsm8k'.
    r"OfflineModeIsEnabled|Couldn't reach '[^']+' on the Hub"
)


def network_error_line(output: str) -> str:
    """The last line of a failed run's output that says a download failed (pytest's short summary cuts
    `ConnectionError: Couldn't reach '...' on the Hub (OfflineModeIsEnabled)` to `Couldn't reach 'nobo...`,
    so the last error line alone hid why aviary's tests failed), else ""."""
    for line in reversed(output.splitlines()):
        if NETWORK_FAILURE.search(line):
            return line.strip().removeprefix("E").strip()[:160]
    return ""


@dataclass
class EnvResult:
    name: str
    kind: str = "offline"
    kind_reasons: list[str] = field(default_factory=list)
    config: str | None = None
    missing: list[str] = field(default_factory=list)
    install: str | None = None
    imports: bool | None = None
    tests: dict[str, int] | None = None
    tests_ok: bool | None = None
    started: bool | None = None
    start_s: float | None = None
    rows: int = 0
    verified: int = 0
    matched: int = 0
    without_task: int = 0
    """Rows no task in data/*.jsonl matches, lacking fields the verify request requires: NeMo Gym's
    own /verify refuses them the same way (FastAPI's 422 "Field required"), so no reward to compare."""
    unseeded: int = 0
    """Replayed rows whose replays of the same turns give different rewards (the environment's own code
    draws from an unseeded generator): the stored reward is one draw of many, so no reward to compare."""
    judge_calls: int = 0
    first_error: str = ""
    seconds: float = 0.0
    reference_agrees: int = 0
    """Rows whose stored reward differs from ours where NeMo Gym's current code (--reference-venv) gives
    ours: the stored reward is stale. Counted apart from `matched`, never in it."""
    reference_checked: int = 0
    """Rows re-scored by NeMo Gym's current code (--reference-venv)."""
    reference_note: str = ""
    paired_note: str = ""
    """What pairing the rows without their task with their position's task row found (--reference-venv)."""
    mismatched: list[tuple[int, dict[str, Any], float]] = field(default_factory=list, repr=False)
    """(row number, payload posted, our reward) of each row whose reward differs from the stored one."""
    taskless: list[tuple[int, dict[str, Any]]] = field(default_factory=list, repr=False)
    replay_differs: list[tuple[int, float, Any]] = field(default_factory=list, repr=False)
    """(row number, our reward, stored reward) of each replayed row whose reward differs from the stored one
    the same way on every replay in one process (see `PROCESS_REPLAYS`)."""
    replay_tasks: dict[int, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict, repr=False)
    """Row number -> (task posted, stored row) of the rows in `replay_differs`."""
    replay_errors: dict[int, str] = field(default_factory=dict, repr=False)
    """Row number -> why the environment refused it, for the rows of `replay_differs` it refused every time."""
    """(row number, stored row) of each row without its task (counted in `without_task`)."""
    paired_checked: int = 0
    """Rows without their task scored, with --reference-venv, as the task row at the same position of the
    configured data file plus the stored response, by both NeMo Gym's current code and ours."""
    paired_agrees: int = 0
    """Of `paired_checked`, those where NeMo Gym's current code and ours give the same reward."""

    @property
    def comparable(self) -> int:
        """Rows whose stored reward can be compared: all but those without their task and the unseeded."""
        return self.rows - self.without_task - self.unseeded

    @property
    def match_ok(self) -> bool:
        return self.comparable > 0 and self.matched >= MATCH_TARGET * self.comparable

    @property
    def match_ok_with_reference(self) -> bool:
        """>= 95% of rows give the stored reward or, where the stored reward is stale, NeMo Gym's current one;
        rows without their task count too once paired with their position's task row and scored by both."""
        scored = self.comparable + self.paired_checked
        agreed = self.matched + self.reference_agrees + self.paired_agrees
        return scored > 0 and agreed >= MATCH_TARGET * scored

    needs_network: bool = False
    """Something it does at import, in its tests or at start fetched from the internet and failed (name
    resolution, a git clone, a hub download), or a requirement only a git URL serves: it cannot run on
    an offline machine whatever this project does, so the totals count it apart."""

    def note(self, error: str) -> None:
        if error and NETWORK_FAILURE.search(error):
            self.needs_network = True
        if error and not self.first_error:
            self.first_error = error


@dataclass
class Options:
    timeout: float
    start_timeout: float
    install: bool
    keep: bool
    reference_venv: Path | None = None
    """A venv where NeMo Gym itself is installed: rows whose reward differs from the stored one are
    scored again there by NeMo Gym's current code (`scripts/ng_reference_verify.py`)."""


SIBLING_IMPORT = re.compile(r"\b(resources_servers|responses_api_agents)\.(\w+)")


def agents_named(env_dir: Path) -> set[str]:
    """The agent implementations the environment's YAMLs name (`<x>: {responses_api_agents: {<impl>: ...}}`)."""
    names: set[str] = set()
    for path in sorted((env_dir / "configs").glob("*.yaml")) if (env_dir / "configs").is_dir() else []:
        try:
            config = load_yaml(path)
        except (yaml.YAMLError, OSError):
            continue
        names.update(impl for impl, _ in instances_of(config, "responses_api_agents").values())
    return names


def checkout_folders(env_dir: Path) -> dict[str, set[str]]:
    """The checkout's folders this environment needs beside it, by kind: the agent folders its YAMLs
    name (those we have no folder of our own for: `simple_agent` is ours) and every
    `resources_servers.<x>` / `responses_api_agents.<x>` those folders import (the gymnasium base, a
    shared env), found transitively: in a NeMo Gym checkout they sit beside it, so the copy needs them."""
    checkout = env_dir.parent.parent
    needed: dict[str, set[str]] = {"resources_servers": set(), "responses_api_agents": set()}
    pending = [env_dir]
    for name in sorted(agents_named(env_dir)):
        folder = checkout / "responses_api_agents" / name
        if not (PROJECT_ROOT / "responses_api_agents" / name).is_dir() and folder.is_dir():
            needed["responses_api_agents"].add(name)
            pending.append(folder)
    while pending:
        folder = pending.pop()
        for source in folder.rglob("*.py"):
            try:
                text = source.read_text(errors="replace")
            except OSError:
                continue
            for kind, name in SIBLING_IMPORT.findall(text):
                if kind == "resources_servers" and name == env_dir.name:
                    continue
                if kind == "responses_api_agents" and (PROJECT_ROOT / kind / name).is_dir():
                    continue  # one of ours: it is linked in
                if name not in needed[kind] and (checkout / kind / name).is_dir():
                    needed[kind].add(name)
                    pending.append(checkout / kind / name)
    return needed


QUOTED_PATH = re.compile(r"""["']([\w.-]+(?:/[\w.-]+)+)["']""")


def checkout_files(env_dir: Path) -> list[str]:
    """Relative paths the environment's YAMLs or its tests' Python files name that exist in
    the checkout outside the folders copied or linked anyway (a prompt under `benchmarks/<x>/prompts/`;
    a docs page under `fern/` whose tool count workplace_assistant's test checks): NeMo Gym resolves
    them from its root, so the copy needs them at the same place."""
    checkout = env_dir.parent.parent
    named: list[str] = []
    for path in sorted((env_dir / "configs").glob("*.yaml")) if (env_dir / "configs").is_dir() else []:
        try:
            config = load_yaml(path)
        except (yaml.YAMLError, OSError):
            continue
        named.extend(value for _, value in walk(config) if isinstance(value, str))
    for source in sorted((env_dir / "tests").rglob("*.py")):
        try:
            named.extend(QUOTED_PATH.findall(source.read_text(errors="replace")))
        except OSError:
            continue
    found: list[str] = []
    for value in named:
        if "://" in value or "${" in value or "\n" in value or ".." in value or value in found:
            continue
        relative = Path(value)
        if relative.is_absolute() or len(relative.parts) < 2 or relative.parts[0] in (*LINKED, "resources_servers"):
            continue
        try:
            exists = (checkout / relative).exists()
        except OSError:  # a long description is no file name
            continue
        if exists:
            found.append(value)
    return found


def sibling_folders(env_dir: Path) -> set[str]:
    """Other environment folders of the checkout that this one (or an agent it names) imports."""
    return checkout_folders(env_dir)["resources_servers"]


BENCHMARK_IMPORT = re.compile(r"\bbenchmarks\.(\w+)")


def companion_benchmarks(env_dir: Path, siblings: set[str]) -> set[str]:
    """NeMo Gym `benchmarks/<name>/` folders (a benchmark's data preparation, beside `resources_servers/` in
    its checkout) that the environment or its siblings import as `benchmarks.<name>`: a user copies them
    along into this project's `benchmarks/`, where they import as a namespace package beside our scripts."""
    benchmarks_dir = env_dir.parent.parent / "benchmarks"
    needed: set[str] = set()
    for folder in [env_dir, *(env_dir.parent / name for name in siblings)]:
        for source in folder.rglob("*.py"):
            for name in BENCHMARK_IMPORT.findall(source.read_text(errors="replace")):
                if (benchmarks_dir / name).is_dir():
                    needed.add(name)
    return needed


def make_project(env_dir: Path) -> Path:
    """A temporary copy of this project: our folders linked in (each of our agents one by one, so the
    checkout's agent folders the environment needs can sit beside them), its folders copied."""
    project = Path(tempfile.mkdtemp(prefix=f"ng_survey_{env_dir.name}_"))
    try:
        fill_project(project, env_dir)
    except BaseException:
        shutil.rmtree(project, ignore_errors=True)  # a copy that failed halfway is not left in /tmp
        raise
    return project


def fill_project(project: Path, env_dir: Path) -> None:
    """Our folders linked into `project`, the environment's and those it needs copied from the checkout."""
    for name in LINKED:
        (project / name).symlink_to(PROJECT_ROOT / name)
    agents = project / "responses_api_agents"
    agents.mkdir()
    for ours in sorted((PROJECT_ROOT / "responses_api_agents").iterdir()):
        if ours.is_dir() and not ours.name.startswith((".", "__")):
            (agents / ours.name).symlink_to(ours)
    (project / "resources_servers").mkdir()
    shutil.copytree(env_dir, project / "resources_servers" / env_dir.name, symlinks=True)
    checkout = env_dir.parent.parent
    for kind, names in checkout_folders(env_dir).items():
        for name in sorted(names):
            # dirs_exist_ok: a YAML may name a folder and one inside it (`agent` and `agent/simulation`).
            shutil.copytree(checkout / kind / name, project / kind / name, symlinks=True, dirs_exist_ok=True)
    for benchmark in sorted(companion_benchmarks(env_dir, sibling_folders(env_dir))):
        source = checkout / "benchmarks" / benchmark
        shutil.copytree(source, project / "benchmarks" / benchmark, symlinks=True)
    for relative in checkout_files(env_dir):
        source, target = checkout / relative, project / relative
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)


def install_missing(lines: list[str], env: dict[str, str], project: Path, timeout: float) -> str:
    """`pip install` the missing requirement lines into this interpreter's environment."""
    code, output = run_bounded([sys.executable, "-m", "pip", "install", *lines], project, env, timeout)
    if code == 0:
        return "installed"
    return "pip timed out" if code is None else f"pip failed: {last_error_line(output)}"


def entrypoints_of(config: dict[str, Any], env_name: str) -> list[str]:
    """The files the YAML's resources servers of this folder run (`entrypoint:`, NeMo Gym's default
    `app.py`), in YAML order. NeMo Gym starts a server as `python <entrypoint>` from its folder, so a
    folder whose YAML runs `gsm8k_app.py` may keep an `app.py` that is only a base imported as
    `resources_servers.<env>.app` (aviary's uses a relative import and cannot run on its own)."""
    found: list[str] = []
    for impl, body in instances_of(config, "resources_servers").values():
        entrypoint = str(body.get("entrypoint") or "app.py")
        if impl == env_name and entrypoint.endswith(".py") and entrypoint not in found:
            found.append(entrypoint)
    return found or ["app.py"]


def check_import(folder: Path, env: dict[str, str], timeout: float, entrypoints: list[str]) -> tuple[bool, str]:
    """Import each entrypoint the way `ng_run` runs it: from its folder, the temp project on the path
    (imported by module name, so its `if __name__ == "__main__":` server start does not run)."""
    for entrypoint in entrypoints:
        if not (folder / entrypoint).is_file():
            return False, f"no {entrypoint}"
        module = entrypoint[: -len(".py")].replace("/", ".")
        code, output = run_bounded([sys.executable, "-c", f"import {module}"], folder, env, timeout)
        if code is None:
            return False, "import timed out"
        if code != 0:
            return False, f"import {entrypoint}: {last_error_line(output)}"
    return True, ""


def run_tests(folder: Path, env: dict[str, str], timeout: float) -> tuple[dict[str, int] | None, str]:
    tests_dir = folder / "tests"
    if not tests_dir.is_dir():
        return None, "no tests/"
    with tempfile.TemporaryDirectory(prefix="ng_survey_junit_") as scratch:
        report = Path(scratch) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
        code, output = run_bounded(command, folder, env, timeout)
        if code is None:
            return None, f"tests timed out after {timeout:.0f} s"
        if not report.is_file():
            return None, f"pytest: {last_error_line(output)}"
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        for suite in ElementTree.parse(report).getroot().iter("testsuite"):
            tests, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0))
            errors, skipped = int(suite.get("errors", 0)), int(suite.get("skipped", 0))
            counts["failed"] += failed
            counts["errors"] += errors
            counts["skipped"] += skipped
            counts["passed"] += tests - failed - errors - skipped
        error = "" if code == 0 else f"tests: {network_error_line(output) or last_error_line(output)}"
        return counts, error


def survey_config(config: dict[str, Any], config_rel: str, judge_url: str, project: Path) -> tuple[Path, list[str]]:
    """A YAML merged after the environment's own: the scripted upstream for every model server the YAML
    defines, a scripted judge model for every model ref (of a resources server or an agent) that names
    nothing (`???`, an instance no config defines, or one dropped here), and values for judge
    URL/key/model interpolations nobody sets. Returns its path and the overrides for the command line."""
    # The model servers the YAML defines are its judges (or a second policy): each is pointed at the
    # scripted upstream. An openai_model keeps its block with the scripted URL, key and model; any other
    # implementation (a vLLM server on GPUs, one this project does not ship) is dropped and its refs
    # go to the scripted judge.
    overrides = []
    dropped = set()
    for instance, (impl, _) in instances_of(config, "responses_api_models").items():
        if impl == "openai_model":
            block = f"{instance}.responses_api_models.openai_model"
            values = dict(zip(SCRIPTED_OPENAI_KEYS, (judge_url, "sk-survey-judge", "scripted-judge"), strict=True))
            overrides += [f"+{block}.{key}={value}" for key, value in values.items()]
        else:
            dropped.add(instance)
    defined = (set(config) - dropped) | {"policy_model"}
    extra: dict[str, Any] = {instance: None for instance in sorted(dropped)}
    for path, name in model_refs(config, ("resources_servers", "responses_api_agents")):
        if name in defined and name != "???":
            continue
        node = extra
        for part in path:
            node = node.setdefault(part, {})
        node["name"] = SURVEY_JUDGE
    if any(value is not None for value in extra.values()):
        extra[SURVEY_JUDGE] = {
            "responses_api_models": {
                "openai_model": {
                    "entrypoint": "app.py",
                    "openai_base_url": judge_url,
                    "openai_api_key": "sk-survey-judge",
                    "openai_model": "scripted-judge",
                }
            }
        }
    # Interpolations are looked for where they still count: not in dropped blocks, not in the keys set above
    # (a name set on the command line that nothing reads is refused by ng_run).
    scanned = {key: value for key, value in config.items() if key not in dropped}
    for instance, (impl, body) in instances_of(config, "responses_api_models").items():
        if impl == "openai_model":
            kept = {key: value for key, value in body.items() if key not in SCRIPTED_OPENAI_KEYS}
            scanned[instance] = {"responses_api_models": {impl: kept}}
    for _, node in walk(scanned):
        if not isinstance(node, str):
            continue
        for name in INTERPOLATION.findall(node):
            # A name the YAML sets to null or ??? is left for the user to set (NeMo Gym's judge YAMLs
            # end with `judge_base_url: null`): the survey sets it like one nobody defines.
            unset = config.get(name) in (None, "???")
            if ":" in name or "." in name or (name in config and not unset) or name.startswith("policy_"):
                continue
            lowered = name.lower()
            value = None
            if "base_url" in lowered:
                value = judge_url
            elif "api_key" in lowered:
                value = "sk-survey"
            elif "model_name" in lowered:
                value = "scripted-judge"
            if value is not None and f"+{name}={value}" not in overrides:
                overrides.append(f"+{name}={value}")
    path = project / "survey_overrides.yaml"
    path.write_text(yaml.safe_dump(extra) if extra else "{}\n")
    return path, overrides


def stored_rows(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


TEXT_PART_TYPES = {"input_text", "output_text", "text"}


def _content_key(content: Any) -> list[Any]:
    """A message's content as a list of parts: ["text", t] for text, [type, payload] for the rest
    (images, files, audio). Two tasks may ask the same words about different images (circle_count),
    so the payload is part of the key; `detail` and null keys are left out, as stored rows add them."""
    if isinstance(content, str):
        return [["text", content]]
    parts: list[Any] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in TEXT_PART_TYPES or (kind is None and "text" in part):
            parts.append(["text", part.get("text") or ""])
        else:
            payload = {key: value for key, value in part.items() if key not in ("type", "detail") and value is not None}
            parts.append([kind, payload])
    return parts


def _input_key(row: dict[str, Any]) -> str | None:
    """A row's input as (role, content parts) pairs: stored rollouts spell the same messages with extra
    keys (`type`, nulls) and content parts where the task row has plain strings."""
    params = row.get("responses_create_params")
    if not isinstance(params, dict) or "input" not in params:
        return None
    items = params["input"]
    if isinstance(items, str):
        return json.dumps([["user", _content_key(items)]], sort_keys=True)
    pairs = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or "role" not in item:
            continue
        pairs.append([item["role"], _content_key(item.get("content"))])
    return json.dumps(pairs, sort_keys=True)


def task_rows_by_input(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The environment's task rows (every `data/*.jsonl` but the rollouts), keyed by their input.

    Many environments' verify responses do not repeat the task fields (NeMo Gym's verify response
    model need not extend the request), so a stored rollout alone cannot be verified again: its task
    is found by its input, and `verify_payload` builds what to post."""
    tasks: dict[str, dict[str, Any]] = {}
    for path in sorted(data_dir.glob("*.jsonl")) if data_dir.is_dir() else []:
        if "rollout" in path.name:
            continue
        for line in stored_rows(path):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            key = _input_key(row) if isinstance(row, dict) else None
            if key is not None:
                tasks.setdefault(key, row)
    return tasks


ID_KEY = re.compile(r"(^|_)id$")
NESTED_TASK_FIELDS = ("expected_values", "verifier_metadata", "metadata")


def _task_ids(row: dict[str, Any]) -> set[tuple[str, str]]:
    """A row's (key, value) ids: string values of keys named `id` or `*_id`, at the top level or one level
    down in the blocks NeMo Gym tasks keep their answer keys in (bbq's `expected_values.provenance_id`)."""
    found = {(key, value) for key, value in row.items() if ID_KEY.search(key) and isinstance(value, str) and value}
    for block in NESTED_TASK_FIELDS:
        nested = row.get(block)
        if isinstance(nested, dict):
            found |= {(k, v) for k, v in nested.items() if ID_KEY.search(k) and isinstance(v, str) and v}
    return found


def find_task(stored_row: dict[str, Any], tasks: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The task row of a stored rollout: by its input, else (a rollout that stores no
    `responses_create_params`, as bbq's reference rollouts, which bbq's own validate_examples.py joins to
    its fixtures by `provenance_id`) the task row sharing the most ids with it. No guess: when no task row,
    or several equally, share its ids, nothing is found."""
    key = _input_key(stored_row)
    if key is not None:
        return tasks.get(key)
    ids = _task_ids(stored_row)
    shared = sorted(((len(ids & _task_ids(task)), index) for index, task in enumerate(tasks.values())), reverse=True)
    if not shared or shared[0][0] == 0 or (len(shared) > 1 and shared[1][0] == shared[0][0]):
        return None
    return list(tasks.values())[shared[0][1]]


def stored_response(stored_row: dict[str, Any]) -> dict[str, Any] | None:
    """The rollout's response: its `response`, else, for a row that keeps only the policy's final text
    (bbq's reference rollouts: `policy_response`, the `model_response_text` of its live run), that text as
    the one assistant message of a completed response, which is all such an environment reads of it."""
    if isinstance(stored_row.get("response"), dict):
        return stored_row["response"]
    text = stored_row.get("policy_response")
    if not isinstance(text, str):
        return None
    message = {
        "id": "msg_stored_policy_response",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        "id": "resp_stored_policy_response",
        "object": "response",
        "created_at": 0,
        "model": "stored",
        "status": "completed",
        "output": [message],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
    }


def missing_task_fields(answer: httpx.Response, row: dict[str, Any]) -> list[str]:
    """The request fields a 422 says are missing from the row, if that is all it says, else []."""
    try:
        detail = answer.json().get("detail")
    except ValueError:
        return []
    if not isinstance(detail, list) or not detail:
        return []
    fields = []
    for problem in detail:
        location = problem.get("loc") if isinstance(problem, dict) else None
        if problem.get("type") != "missing" or not isinstance(location, list) or len(location) != 2:
            return []
        if location[0] != "body" or location[1] in row:
            return []
        fields.append(str(location[1]))
    return fields


def verify_payload(task: dict[str, Any] | None, stored_row: dict[str, Any]) -> dict[str, Any]:
    """What NeMo Gym's re-verification posts (`rollout_reverification._build_verify_payload`): the task row
    with the rollout's `response`, nothing else of the stored row. The stored row also holds the earlier
    verify's outputs (iheval's `strict`/`loose`), which an environment that spreads its request into its
    answer then received twice (HTTP 500). Without a task row, the stored row is all there is."""
    response = stored_response(stored_row)
    if task is None or response is None:
        return stored_row
    return {**task, "response": response}


def replay_tool_calls(client: httpx.Client, base: str, response: Any) -> None:
    """Call the rollout's tools again, in order and in the session just seeded, as the agent did: a stateful
    environment (example_session_state_mgmt's counter) scores the state its tools left, so verifying the
    stored response alone scored 0 where the rollout scored 1. Answers are not checked: verify decides."""
    output = response.get("output") if isinstance(response, dict) else None
    for item in output if isinstance(output, list) else []:
        if not isinstance(item, dict) or item.get("type") != "function_call" or not item.get("name"):
            continue
        try:
            arguments = json.loads(item.get("arguments") or "{}")
        except ValueError:
            continue  # the agent sent the model its own parse error; the tool never ran
        client.post(f"{base}/{item['name']}", json=arguments)


def agents_of(config: dict[str, Any], resources_name: str) -> list[str]:
    """The agents the YAML defines for this resources server."""
    return [
        name
        for name, (_impl, body) in instances_of(config, "responses_api_agents").items()
        if isinstance(body.get("resources_server"), dict) and body["resources_server"].get("name") == resources_name
    ]


def cohort_size(config: dict[str, Any], resources_name: str) -> int:
    """How many rollouts of one task the resources server waits for before it answers any of their
    /verify calls: genrm_compare's `num_rollouts_per_prompt` (16 in its YAML) compares a task's rollouts
    with each other, so NeMo Gym collects it with `num_repeats` equal to it; 1 for every other server."""
    _impl, body = instances_of(config, "resources_servers").get(resources_name, ("", {}))
    value = body.get("num_rollouts_per_prompt")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1


def run_repeats(agent_url: str, task: dict[str, Any], repeats: int, timeout: float) -> httpx.Response:
    """`repeats` runs of one task through the agent at once, each in its own session (as the collector's
    `num_repeats` sends them): the first answer that is not a 200, else the first answer."""

    def run_once(_: int) -> httpx.Response:
        with httpx.Client(timeout=httpx.Timeout(timeout), trust_env=False) as client:
            return client.post(f"{agent_url}/run", json=task)

    with concurrent.futures.ThreadPoolExecutor(max_workers=repeats) as pool:
        answers = list(pool.map(run_once, range(repeats)))
    return next((answer for answer in answers if answer.status_code != 200), answers[0])


def verify_rows(
    head_url: str,
    resources_name: str,
    rows_path: Path,
    timeout: float,
    result: EnvResult,
    agents: list[str] | None = None,
    repeats: int = 1,
) -> None:
    """Post each stored rollout to /verify and compare rewards. A stored row without a `response`
    (some folders store task rows there) is run through its agent's `/run` instead, the scripted
    policy answering: it counts as verified, with no stored reward to match; `repeats` times at once
    for an environment that scores a cohort (`cohort_size`)."""
    lines = stored_rows(rows_path)
    if not lines:
        return
    tasks = task_rows_by_input(rows_path.parent)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=httpx.Timeout(min(60.0, timeout)), trust_env=False) as client:
        servers = client.get(f"{head_url}/server_instances").json()
        urls = [server["url"] for server in servers if server["name"] == resources_name]
        if not urls:
            result.note(f"verify: no running server named {resources_name}")
            return
        base = urls[0].rstrip("/")
        agent_urls = {
            server["name"]: server["url"].rstrip("/") for server in servers if server["name"] in (agents or [])
        }
        stored_rows_parsed: list[dict[str, Any] | None] = []
        for line in lines:
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            stored_rows_parsed.append(parsed if isinstance(parsed, dict) else None)
        if not any(stored_rows_parsed) and tasks and agent_urls:
            # Placeholders (`<PLACEHOLDER ROW>`), no rollouts: the task rows are run instead, to see it verify.
            result.note(f"{rows_path.name} holds no rollouts ({lines[0][:30]!r}): its task rows were run")
            stored_rows_parsed = [{**task} for task in tasks.values()]
            result.rows = len(stored_rows_parsed)
        for number, stored_row in enumerate(stored_rows_parsed, 1):
            if time.monotonic() > deadline:
                result.note(f"verify timed out after {timeout:.0f} s")
                return
            if stored_row is None:
                result.note(f"{rows_path.name} line {number} is not a JSON object: {lines[number - 1][:40]!r}")
                continue
            task_row = find_task(stored_row, tasks)
            row = verify_payload(task_row, stored_row)
            try:
                task = {key: value for key, value in row.items() if key not in ("response", "reward")}
                client.cookies.clear()
                if "response" not in row and agent_urls:
                    named = (row.get("agent_ref") or {}).get("name") if isinstance(row.get("agent_ref"), dict) else None
                    agent_url = agent_urls.get(named) or next(iter(agent_urls.values()))
                    answer = run_repeats(agent_url, task, repeats, min(60.0, timeout))
                else:
                    client.post(f"{base}/seed_session", json=task)  # stateless servers may refuse: verify decides
                    replay_tool_calls(client, base, row.get("response"))
                    answer = client.post(f"{base}/verify", json=row)
            except httpx.HTTPError as error:
                result.note(f"verify: {type(error).__name__}: {error}")
                continue
            missing = missing_task_fields(answer, row) if answer.status_code == 422 and task_row is None else []
            if missing:
                result.without_task += 1
                result.taskless.append((number, stored_row))
                result.note(
                    f"row {number} has no task: no row of data/*.jsonl has its input and it lacks "
                    f"{', '.join(missing)} (NeMo Gym's /verify refuses it too)"
                )
                continue
            if answer.status_code != 200:
                result.note(f"verify: HTTP {answer.status_code} {answer.text[:120]}")
                continue
            reward = answer.json().get("reward") if isinstance(answer.json(), dict) else None
            if not isinstance(reward, (int, float)) or isinstance(reward, bool):
                result.note("verify: no numeric reward in the answer")
                continue
            result.verified += 1
            stored = stored_row.get("reward")
            if isinstance(stored, (int, float)) and math.isclose(reward, stored, abs_tol=REWARD_TOLERANCE):
                result.matched += 1
            elif not isinstance(stored, (int, float)):
                result.note(f"{rows_path.name} row {number} stores no reward to compare")
            else:
                result.note(f"reward {reward} != stored {stored} (row {number})")
                result.mismatched.append((number, row, float(reward)))


# ---- environments scored by their agent (NeMo Gym's gymnasium family) -------------------------------
STEPPING_AGENTS = {"gymnasium_agent"}
"""Agents whose resources server has no `/verify`: the reward is summed from `/step` during the episode,
so a stored rollout is scored again by replaying its model turns through the agent's `/run`."""

MODEL_ITEM_TYPES = {"function_call", "reasoning"}
EPISODE_RESULT_FIELDS = {"responses_create_params", "response", "reward", "terminated", "truncated", "info"}


def model_turns(output: list[Any]) -> list[list[dict[str, Any]]]:
    """A stored rollout's output cut into what each model call returned: runs of assistant messages,
    function calls and reasoning, separated by what the environment added (observations, tool outputs)."""
    turns: list[list[dict[str, Any]]] = []
    previous_was_model = False
    for item in output:
        if not isinstance(item, dict):
            continue
        is_model = item.get("type") in MODEL_ITEM_TYPES or (
            item.get("type", "message") == "message" and item.get("role") == "assistant"
        )
        if is_model and previous_was_model:
            turns[-1].append(item)
        elif is_model:
            turns.append([item])
        previous_was_model = is_model
    return turns


def turn_of(items: list[dict[str, Any]]) -> Turn:
    text = "".join(
        part.get("text") or ""
        for item in items
        if item.get("type", "message") == "message"
        for part in (item.get("content") if isinstance(item.get("content"), list) else [])
        if isinstance(part, dict)
    )
    calls = [
        (item.get("name") or "", item.get("arguments") or "{}") for item in items if item.get("type") == "function_call"
    ]
    return Turn(text=text or None, tool_calls=calls)


def observations(items: list[Any]) -> list[Any]:
    """What the environment said in a request's input: the text of every message that is not the model's
    and the output of every tool call, without ids (the scripted model's call ids differ run to run)."""
    seen: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call_output":
            seen.append(["tool", item.get("output")])
        elif item.get("type", "message") == "message" and item.get("role") != "assistant":
            seen.append([item.get("role"), _content_key(item.get("content"))])
    return seen


class Replay:
    """The survey's model: a scripted judge, or, while a stored rollout is replayed, that rollout's
    next model turn (counted from the model turns already in the request's input)."""

    def __init__(self) -> None:
        self.base_length = 0
        self.turns: list[list[dict[str, Any]]] | None = None
        self.observed: list[Any] = []
        """What the environment showed the model in the replay under way (its last request's input):
        two replays of the same turns that show different observations come from unseeded code."""

    def __call__(self, body: dict[str, Any]) -> Turn:
        if self.turns is None:
            return scripted_turn(body)
        items = body.get("input")
        self.observed = observations(items if isinstance(items, list) else [])
        done = len(model_turns(items[self.base_length :])) if isinstance(items, list) else 0
        return turn_of(self.turns[done]) if done < len(self.turns) else Turn(text="")


def trajectory_turns(stored: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The model turns of a rollout that records each step's action in a `trajectory` (openair_congestion's
    rows, written by its generate_example_rollouts.py straight through /reset and /step, keep only the last
    step's response and list every step as `{"step", "action": {"name", "arguments"}, "reward", ...}`):
    one function call per step, or its text for an action that is a string. [] when it records none."""
    steps = stored.get("trajectory")
    turns: list[list[dict[str, Any]]] = []
    for index, step in enumerate(steps if isinstance(steps, list) else []):
        action = step.get("action") if isinstance(step, dict) else None
        if isinstance(action, dict) and isinstance(action.get("name"), str):
            arguments = action.get("arguments")
            text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
            call = {"type": "function_call", "name": action["name"], "arguments": text, "call_id": f"call_{index}"}
            turns.append([call])
        elif isinstance(action, str):
            content = [{"type": "output_text", "text": action}]
            turns.append([{"type": "message", "role": "assistant", "content": content}])
        else:
            return []
    return turns


def stored_turns(stored: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """What the policy said at each step of a stored rollout: the model turns of its response's output,
    or, when its `trajectory` records more steps than that output holds (a response that is only the last
    step's), the trajectory's actions. Replaying only the last step's action scored openair_congestion's
    first step with its last action and its second with an empty answer (-1.83 where NeMo Gym stored -0.81)."""
    response = stored.get("response")
    output = response.get("output") if isinstance(response, dict) else None
    turns = model_turns(output if isinstance(output, list) else [])
    recorded = trajectory_turns(stored)
    return recorded if len(recorded) > len(turns) else turns


UNSEEDED_REPLAYS = 5
"""How many more times a replayed row whose reward differs from the stored one is run again, to see
whether the environment's own code gives it one reward (a real difference) or several (unseeded)."""


def replay_once(
    client: httpx.Client, agent_url: str, task: dict[str, Any], stored: dict[str, Any], replay: Replay
) -> tuple[float | None, str]:
    """One replay of a stored rollout through the agent's `/run`: (reward, "") or (None, why not); what
    the environment showed the model is left in `replay.observed`."""
    replay.base_length = len(stored["responses_create_params"]["input"])
    replay.turns = stored_turns(stored)
    replay.observed = []
    try:
        client.cookies.clear()
        answer = client.post(f"{agent_url}/run", json=task)
    except httpx.HTTPError as error:
        return None, f"replay: {type(error).__name__}: {error}"
    finally:
        replay.turns = None
    if answer.status_code != 200:
        return None, f"replay: HTTP {answer.status_code} {answer.text[:120]}"
    reward = answer.json().get("reward") if isinstance(answer.json(), dict) else None
    if not isinstance(reward, (int, float)) or isinstance(reward, bool):
        return None, "replay: no numeric reward in the answer"
    return float(reward), ""


def replay_rows(
    head_url: str, agent_name: str, rows_path: Path, replay: Replay, timeout: float, result: EnvResult
) -> None:
    """Each stored rollout run again through the agent's `/run` (its task found by `_ng_task_index` in
    the task rows, else by input), the model replaying the rollout's own turns; rewards compared. A row
    whose reward differs is replayed again (up to `UNSEEDED_REPLAYS` times): when the replays of the very
    same turns give different rewards, the environment's own code is unseeded for that row (blackjack
    deals from `random.Random()`; grl_tetris' board draws its pieces from an unseeded generator), so its
    stored reward is one draw of many: counted in `unseeded`, left out of the comparable rows."""
    lines = stored_rows(rows_path)
    if not lines:
        return
    task_lines = stored_rows(rows_path.parent / "example.jsonl")
    by_input = task_rows_by_input(rows_path.parent)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=httpx.Timeout(min(120.0, timeout)), trust_env=False) as client:
        agent_url = agent_url_of(client, head_url, agent_name)
        if agent_url is None:
            result.note(f"replay: no running agent named {agent_name}")
            return
        for number, line in enumerate(lines, start=1):
            if time.monotonic() > deadline:
                result.note(f"replay timed out after {timeout:.0f} s")
                return
            stored = json.loads(line)
            index = stored.get("_ng_task_index")
            if isinstance(index, int) and 0 <= index < len(task_lines):
                task = json.loads(task_lines[index])
            else:
                task = by_input.get(_input_key(stored) or "")
            if task is None:
                result.note(f"replay: no task row for stored row {number}")
                continue
            # The stored row's own task fields win (as for /verify), but not its request: the agent
            # adds the reset observation to the task's input, and the stored input already holds it.
            task = task | {key: value for key, value in stored.items() if key not in EPISODE_RESULT_FIELDS}
            reward, error = replay_once(client, agent_url, task, stored, replay)
            expected = stored.get("reward")
            if reward is not None and isinstance(expected, (int, float)) and same_reward(reward, expected):
                result.verified += 1
                result.matched += 1
                continue
            # A reward that differs, or a replay the environment refused (grl_tetris answers 400 when a board
            # that came out differently outlasts the stored turns): replayed again to tell unseeded code apart.
            outcomes = [(reward, replay.observed)]
            while len(outcomes) <= UNSEEDED_REPLAYS and time.monotonic() < deadline:
                again, _ = replay_once(client, agent_url, task, stored, replay)
                outcomes.append((again, replay.observed))
                if not same_reward(again, reward) or outcomes[-1][1] != outcomes[0][1]:
                    break
            got = [value for value, _ in outcomes if value is not None]
            listed = ", ".join("refused" if value is None else f"{value:g}" for value, _ in outcomes)
            if got:
                result.verified += 1
            if any(not same_reward(value, reward) for value, _ in outcomes):
                result.unseeded += 1
                result.note(
                    f"row {number} unseeded: the environment's own code gives different rewards on replays of "
                    f"the same turns ({listed}; stored {expected})"
                )
            elif any(seen != outcomes[0][1] for _, seen in outcomes):
                result.unseeded += 1
                result.note(
                    f"row {number} unseeded: the environment's own code shows different observations on "
                    f"replays of the same turns (rewards {listed}; stored {expected})"
                )
            else:
                # The same on every replay here (a reward, or a refusal: a board that came out otherwise
                # outlasts the stored turns): a real difference, or a draw made once per process.
                result.replay_differs.append((number, reward, expected))
                result.replay_tasks[number] = (task, stored)
                if reward is None:
                    result.replay_errors[number] = error


def agent_url_of(client: httpx.Client, head_url: str, agent_name: str) -> str | None:
    servers = client.get(f"{head_url}/server_instances").json()
    urls = [server["url"] for server in servers if server["name"] == agent_name]
    return urls[0].rstrip("/") if urls else None


def replay_in_new_process(head_url: str, agent_name: str, replay: Replay, timeout: float, result: EnvResult) -> None:
    """The rows in `result.replay_differs` replayed once more in a fresh `ng_run` process: a row whose
    reward there differs from the first process's is unseeded across processes (see `PROCESS_REPLAYS`)."""
    with httpx.Client(timeout=httpx.Timeout(min(120.0, timeout)), trust_env=False) as client:
        agent_url = agent_url_of(client, head_url, agent_name)
        if agent_url is None:
            return
        still = []
        for number, reward, expected in result.replay_differs:
            task, stored = result.replay_tasks[number]
            again, _ = replay_once(client, agent_url, task, stored, replay)
            if same_reward(again, reward):
                still.append((number, reward, expected))
                continue
            result.unseeded += 1
            before, shown = ("refused" if value is None else f"{value:g}" for value in (reward, again))
            result.note(
                f"row {number} unseeded: the environment's own code gives different rewards for the same turns "
                f"in two processes ({before}, {shown}; stored {expected})"
            )
        result.replay_differs = still


def same_reward(one: float | None, other: float | None) -> bool:
    """Two replays' rewards agree: both numbers within the tolerance, or both refused (None)."""
    if one is None or other is None:
        return one is None and other is None
    return math.isclose(one, other, abs_tol=REWARD_TOLERANCE)


REFERENCE_SCRIPT = PROJECT_ROOT / "scripts" / "ng_reference_verify.py"


def reference_rewards(
    project: Path,
    name: str,
    config: dict[str, Any],
    resources_name: str,
    payloads: list[dict[str, Any]],
    options: Options,
) -> tuple[list[dict[str, Any]] | None, str]:
    """Each payload scored by NeMo Gym's current code: the `--reference-venv` interpreter runs
    scripts/ng_reference_verify.py on them. (one answer per payload, "") or (None, why not)."""
    assert options.reference_venv is not None
    _impl, body = instances_of(config, "resources_servers").get(resources_name, ("", {}))
    entrypoint = str(body.get("entrypoint") or "app.py")
    python = options.reference_venv / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="ng_survey_reference_") as scratch:
        # NeMo Gym's own `nemo_gym` must be the one imported: the temp project's is a link to ours.
        (Path(scratch) / "resources_servers").symlink_to(project / "resources_servers")
        if (project / "benchmarks").is_dir():
            (Path(scratch) / "benchmarks").symlink_to(project / "benchmarks")
        env = {key: value for key, value in child_env(project).items() if key != "PYTHONPATH"}
        stdin = "".join(json.dumps(payload) + "\n" for payload in payloads)
        command = [str(python), str(REFERENCE_SCRIPT), scratch, name, entrypoint, json.dumps(body)]
        try:
            done = subprocess.run(
                command,
                input=stdin,
                cwd=project / "resources_servers" / name,
                env=env,
                capture_output=True,
                text=True,
                timeout=options.timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, f"reference run failed: {type(error).__name__}: {error}"[:200]
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or len(answers) != len(payloads):
        return None, f"reference run failed: {last_error_line(done.stderr) or done.returncode}"
    return answers, ""


def rescore_with_reference(
    project: Path, result: EnvResult, config: dict[str, Any], resources_name: str, options: Options
) -> None:
    """Score the rows whose reward differs from the stored one again with NeMo Gym's current code (the
    `--reference-venv` interpreter runs scripts/ng_reference_verify.py on the same payloads). A row where it
    gives our reward has a stale stored reward: counted in `reference_agrees`, apart from `matched`."""
    if options.reference_venv is None or not result.mismatched:
        return
    if result.kind != "offline":
        result.reference_note = "not re-scored: its verify calls a model the reference run does not have"
        return
    payloads = [payload for _, payload, _ in result.mismatched]
    answers, error = reference_rewards(project, result.name, config, resources_name, payloads, options)
    if answers is None:
        result.reference_note = error
        return
    notes = []
    for (number, _payload, ours), answer in zip(result.mismatched, answers):
        result.reference_checked += 1
        theirs = answer.get("reward")
        if isinstance(theirs, (int, float)) and math.isclose(theirs, ours, abs_tol=REWARD_TOLERANCE):
            result.reference_agrees += 1
            notes.append(f"row {number}: stored reward stale, NeMo Gym's current code agrees with ours ({ours})")
        elif isinstance(theirs, (int, float)):
            notes.append(f"row {number}: NeMo Gym's current code gives {theirs}, ours {ours}")
        else:
            notes.append(f"row {number}: NeMo Gym's current code: {answer.get('error', 'no reward')}"[:160])
    result.reference_note = "; ".join(notes)


def example_data_path(config: dict[str, Any], env_name: str) -> str:
    """The task rows the environment's YAML names as its `example` dataset (an agent's `datasets` entry of
    `type: example`, its `jsonl_fpath` relative to the project root), else its `data/example.jsonl`."""
    for _instance, (_impl, body) in instances_of(config, "responses_api_agents").items():
        for dataset in body.get("datasets") or []:
            if isinstance(dataset, dict) and dataset.get("type") == "example" and dataset.get("jsonl_fpath"):
                return str(dataset["jsonl_fpath"])
    return f"resources_servers/{env_name}/data/example.jsonl"


def score_on_our_stack(client: httpx.Client, base: str, payload: dict[str, Any]) -> tuple[float | None, str]:
    """A verify payload scored by our running stack, as `verify_rows` scores a stored row."""
    task = {key: value for key, value in payload.items() if key not in ("response", "reward")}
    client.cookies.clear()
    try:
        client.post(f"{base}/seed_session", json=task)
        replay_tool_calls(client, base, payload.get("response"))
        answer = client.post(f"{base}/verify", json=payload)
    except httpx.HTTPError as error:
        return None, f"{type(error).__name__}: {error}"
    if answer.status_code != 200:
        return None, f"HTTP {answer.status_code} {answer.text[:120]}"
    reward = answer.json().get("reward") if isinstance(answer.json(), dict) else None
    if not isinstance(reward, (int, float)) or isinstance(reward, bool):
        return None, "no numeric reward"
    return float(reward), ""


def pair_taskless_rows(
    project: Path,
    head_url: str,
    result: EnvResult,
    config: dict[str, Any],
    resources_name: str,
    options: Options,
) -> None:
    """With --reference-venv, rows stored without their task (generated from an older data file: they lack
    the task fields and NeMo Gym's own /verify refuses them) become comparable rows: the task row at the same
    position of the configured data file (`example_data_path`) plus the stored rollout's response, scored
    by NeMo Gym's current code and by our /verify. Both agreeing counts in `paired_agrees`; no stored
    reward is involved, so these rows never count as stored-reward matches."""
    if options.reference_venv is None or not result.taskless:
        return
    relative = example_data_path(config, result.name)
    if result.kind != "offline":
        result.paired_note = f"rows without their task not paired with {relative}: its verify calls a model"
        return
    task_lines = stored_rows(project / relative)
    pairs: list[tuple[int, dict[str, Any]]] = []
    for number, stored_row in result.taskless:
        response = stored_response(stored_row)
        if number > len(task_lines) or response is None:
            continue
        try:
            task = json.loads(task_lines[number - 1])
        except ValueError:
            continue
        if isinstance(task, dict):
            pairs.append((number, {**task, "response": response}))
    if not pairs:
        result.paired_note = f"rows without their task: no task row at their position in {relative}"
        return
    with httpx.Client(timeout=httpx.Timeout(min(60.0, options.timeout)), trust_env=False) as client:
        servers = client.get(f"{head_url}/server_instances").json()
        urls = [server["url"] for server in servers if server["name"] == resources_name]
        if not urls:
            result.paired_note = f"rows without their task not paired: no running server named {resources_name}"
            return
        ours = [score_on_our_stack(client, urls[0].rstrip("/"), payload) for _, payload in pairs]
    answers, error = reference_rewards(
        project, result.name, config, resources_name, [payload for _, payload in pairs], options
    )
    if answers is None:
        result.paired_note = f"rows without their task, paired with {relative}: {error}"
        return
    differences = []
    agreed: list[float] = []  # shown, so a reader sees whether the agreement is only on 0.0
    for (number, _payload), (our_reward, our_error), answer in zip(pairs, ours, answers):
        result.paired_checked += 1
        theirs = answer.get("reward")
        if our_reward is not None and isinstance(theirs, (int, float)):
            if math.isclose(theirs, our_reward, abs_tol=REWARD_TOLERANCE):
                result.paired_agrees += 1
                agreed.append(our_reward)
            else:
                differences.append(f"row {number}: NeMo Gym's current code gives {theirs}, ours {our_reward}")
        else:
            why = our_error if our_reward is None else answer.get("error", "no reward")
            side = "ours" if our_reward is None else "NeMo Gym's current code"
            differences.append(f"row {number}: {side}: {why}"[:160])
    numbers = ", ".join(str(number) for number, _ in pairs)
    result.paired_note = "; ".join(
        [
            f"rows {numbers} (stored without their task) paired by position with {relative} (task row i + "
            f"stored response i): NeMo Gym's current code and ours agree on {result.paired_agrees} of "
            f"{result.paired_checked} (rewards {', '.join(f'{reward:g}' for reward in agreed) or 'none'})",
            *differences,
        ]
    )


class RunningStack:
    """`ng_run` on an environment's own YAML in the temporary project, its output collected, stopped on `close()`."""

    def __init__(self, project: Path, env: dict[str, str], command: list[str], head_port: int):
        self.head_url = f"http://127.0.0.1:{head_port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            command,
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        stdout = self.process.stdout
        assert stdout is not None
        self.reader = threading.Thread(target=lambda: self.lines.extend(line.rstrip() for line in stdout), daemon=True)
        self.reader.start()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.process.poll() is not None or time.monotonic() > deadline:
                return self.ready
            time.sleep(0.1)
        return True

    @property
    def ready(self) -> bool:
        return any(READY_MARKER in line for line in self.lines)

    def close(self) -> None:
        kill_group(self.process, signal.SIGINT, grace=20)
        self.reader.join(timeout=5)


PROCESS_REPLAYS = 3
"""How many fresh `ng_run` processes a replayed row whose reward differs, the same on every replay in one
process, is replayed in again: an environment can draw its randomness once per process (grl_tetris' boards
take their piece weights from an unseeded draw that restores the generator after it, so every board in
one process shares them and the next process's differ)."""


def start_and_verify(
    project: Path, result: EnvResult, config: dict[str, Any], env: dict[str, str], options: Options
) -> None:
    config_rel = str(Path(result.config or ""))
    resources = list(instances_of(config, "resources_servers"))
    if not resources:
        result.note("its YAML defines no resources server")
        return
    resources_name = next(
        (name for name, (impl, _) in instances_of(config, "resources_servers").items() if impl == result.name),
        resources[0],
    )
    stepping = [
        name for name, (impl, _) in instances_of(config, "responses_api_agents").items() if impl in STEPPING_AGENTS
    ]
    replay = Replay()
    with ScriptedOpenAI(replay) as upstream:
        overrides_path, overrides = survey_config(config, config_rel, upstream.url, project)
        paths = ",".join([config_rel, POLICY_CONFIG, overrides_path.name])

        def start() -> RunningStack:
            head_port = free_port()
            command = [
                sys.executable,
                "-m",
                "nemo_gym.cli.run",
                f"+config_paths=[{paths}]",
                f"+head_server.port={head_port}",
                f"+policy_base_url={upstream.url}",
                "+policy_api_key=sk-survey",
                "+policy_model_name=scripted-model",
                f"+startup_timeout_s={options.start_timeout:.0f}",
                *overrides,
            ]
            return RunningStack(project, env, command, head_port)

        stack = start()
        begun = time.monotonic()
        try:
            if not stack.wait_ready(options.start_timeout + 10):
                result.started = False
                if stack.process.poll() is None:
                    result.note(f"ng_run not up after {options.start_timeout + 10:.0f} s")
                else:
                    result.note(f"ng_run: {last_error_line(chr(10).join(stack.lines))}")
                    credentials = missing_credentials("\n".join(stack.lines))
                    if credentials:
                        result.kind = "external"
                        result.kind_reasons += [f"required config field {name} not set" for name in credentials]
                return
            result.started = True
            result.start_s = round(time.monotonic() - begun, 1)
            before = len(upstream.requests)
            rows_path = project / "resources_servers" / result.name / "data" / "example_rollouts.jsonl"
            try:
                if stepping:
                    replay_rows(stack.head_url, stepping[0], rows_path, replay, options.timeout, result)
                    for _ in range(PROCESS_REPLAYS):
                        if not result.replay_differs:
                            break
                        stack.close()
                        stack = start()
                        if not stack.wait_ready(options.start_timeout + 10):
                            break
                        replay_in_new_process(stack.head_url, stepping[0], replay, options.timeout, result)
                    for number, reward, expected in result.replay_differs:
                        refused = result.replay_errors.get(number, "")
                        result.note(refused or f"reward {reward} != stored {expected} (row {number}, replayed)")
                else:
                    verify_rows(
                        stack.head_url,
                        resources_name,
                        rows_path,
                        options.timeout,
                        result,
                        agents_of(config, resources_name),
                        cohort_size(config, resources_name),
                    )
                    rescore_with_reference(project, result, config, resources_name, options)
                    pair_taskless_rows(project, stack.head_url, result, config, resources_name, options)
            except (httpx.HTTPError, ValueError) as error:
                result.note(f"verify: {type(error).__name__}: {error}")
            result.judge_calls = 0 if stepping else len(upstream.requests) - before  # replayed turns are no judge
        finally:
            stack.close()


def survey_one(env_dir: Path, options: Options) -> EnvResult:
    started = time.monotonic()
    result = EnvResult(env_dir.name)
    config_path = own_config(env_dir)
    config: dict[str, Any] = {}
    if config_path is None:
        result.note("no configs/*.yaml")
    else:
        result.config = f"resources_servers/{env_dir.name}/configs/{config_path.name}"
        try:
            config = load_yaml(config_path)
        except yaml.YAMLError as error:
            result.note(f"YAML: {first_line(str(error))}")
        result.kind, result.kind_reasons = classify(config, env_dir)
    if not (env_dir / "app.py").is_file():
        # NeMo Gym's `gymnasium` folder: a base class other environments import, "not a standalone server".
        result.kind, result.kind_reasons = "library", ["no app.py: a base other environments import"]
    project = make_project(env_dir)
    if options.keep:
        print(f"{env_dir.name}: temporary project kept at {project}", file=sys.stderr)
    try:
        env = child_env(project)
        folder = project / "resources_servers" / env_dir.name
        result.rows = len(stored_rows(folder / "data" / "example_rollouts.jsonl"))
        if not result.rows:
            result.note("no rows in data/example_rollouts.jsonl")
        wanted = requirements(folder / "requirements.txt")
        for agent in sorted(checkout_folders(env_dir)["responses_api_agents"]):
            wanted = requirements(project / "responses_api_agents" / agent / "requirements.txt") | wanted
        result.missing = [name for name in wanted if not is_installed(name)]
        if result.missing and options.install:
            lines = [wanted[name] for name in result.missing]
            result.install = install_missing(lines, env, project, options.timeout)
            result.missing = [name for name in result.missing if not is_installed(name)]
        if any("git+" in wanted[name] for name in result.missing):
            result.needs_network = True  # only a git URL serves it: no package index has it
        result.imports, error = check_import(
            folder, env, min(options.timeout, 120), entrypoints_of(config, env_dir.name)
        )
        result.note(error)
        result.tests, error = run_tests(folder, env, options.timeout)
        if result.tests is not None:
            result.tests_ok = result.tests["passed"] > 0 and not (result.tests["failed"] or result.tests["errors"])
        result.note(error)
        if not result.imports:
            result.started = None  # its app does not import: ng_run cannot start it, so the start is not tried
        elif config:
            start_and_verify(project, result, config, env, options)
    finally:
        if not options.keep:
            shutil.rmtree(project, ignore_errors=True)
    result.seconds = round(time.monotonic() - started, 1)
    return result


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


# ---- the report --------------------------------------------------------------------------------
def mark(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def table(results: list[EnvResult]) -> str:
    header = [
        "environment",
        "kind",
        "missing reqs",
        "import",
        "tests p/f/e",
        "start",
        "verified",
        "match",
        "no task",
        "unseeded",
        "s",
        "first error",
    ]
    with_reference = any(r.reference_checked or r.reference_note or r.paired_note for r in results)
    if with_reference:
        header.insert(-2, "ngym now")
    rows = []
    for r in results:
        tests = "-" if r.tests is None else f"{r.tests['passed']}/{r.tests['failed']}/{r.tests['errors']}"
        rows.append(
            [
                r.name,
                r.kind,
                ", ".join(r.missing)[:40] or "-",
                mark(r.imports),
                tests,
                mark(r.started),
                f"{r.verified}/{r.rows}",
                f"{r.matched}/{r.comparable}",
                str(r.without_task),
                str(r.unseeded),
                f"{r.seconds:.0f}",
                r.first_error[:110],
            ]
        )
        if with_reference:
            scored = r.reference_checked + r.paired_checked
            rows[-1].insert(-2, f"{r.reference_agrees + r.paired_agrees}/{scored}" if scored else "-")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    out = []
    for row in [header, *rows]:
        out.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return "\n".join(out)


def totals(results: list[EnvResult], wall_s: float, jobs: int) -> str:
    lines = []
    for kind in ("offline", "judge", "external"):
        group = [r for r in results if r.kind == kind]
        if not group:
            continue
        lines.append(
            f"{kind:8s} {len(group):3d} envs: import {sum(bool(r.imports) for r in group)}, "
            f"tests pass {sum(bool(r.tests_ok) for r in group)}, start {sum(bool(r.started) for r in group)}, "
            f"verify all rows {sum(r.rows > 0 and r.verified == r.rows for r in group)}, "
            f">=95% reward match {sum(r.match_ok for r in group)}, "
            f"tests pass AND >=95% match {sum(bool(r.tests_ok) and r.match_ok for r in group)}"
        )
    libraries = sorted(r.name for r in results if r.kind == "library")
    if libraries:
        lines.append(f"library  {len(libraries):3d} folders with no server of their own: {', '.join(libraries)}")
    offline = [r for r in results if r.kind == "offline"]
    networked = sorted(r.name for r in offline if r.needs_network)
    if networked:
        runnable = [r for r in offline if not r.needs_network]
        lines.append(
            f"offline envs that need the network (a download at import, in their tests or at start, or a "
            f"git-only requirement): {len(networked)}: {', '.join(networked)}"
        )
        lines.append(
            f"offline without those: {len(runnable)} envs, tests pass AND >=95% match "
            f"{sum(bool(r.tests_ok) and r.match_ok for r in runnable)}"
        )
    judge = [r for r in results if r.kind == "judge"]
    if judge:
        lines.append(
            f"judge envs that start and verify every row against the scripted judge: "
            f"{sum(bool(r.started) and r.rows > 0 and r.verified == r.rows for r in judge)} of {len(judge)}"
        )
    rows = sum(r.rows for r in results)
    lines.append(
        f"rows: {sum(r.verified for r in results)} of {rows} verified, {sum(r.matched for r in results)} "
        f"with the stored reward, {sum(r.without_task for r in results)} without their task (not comparable: "
        f"no row of data/*.jsonl has their input and they lack required fields), "
        f"{sum(r.unseeded for r in results)} unseeded (replays of the same turns give different rewards or "
        f"observations: the environment's own code is unseeded; not comparable)"
    )
    checked = [r for r in results if r.reference_checked or r.reference_note or r.paired_note]
    if checked:
        lines.append(
            "with NeMo Gym's current code (--reference-venv; column `ngym now`: rows where NeMo Gym's current "
            "code gives our reward, of the rows it scored: (a) rows whose reward differs from the stored one, "
            "the same payload scored by it; (b) rows stored without their task, each paired by position with "
            "the task row of the environment's example data file (task row i + stored response i) and scored "
            "by it and by our /verify): these counts take (a) a stale stored reward it agrees with ours on and "
            "(b) its agreement with ours as a match; no stored reward is compared in (b); the figures above "
            "count neither"
        )
        lines.append(
            f"  (a) rows whose stored reward is stale and NeMo Gym's current code agrees with ours: "
            f"{sum(r.reference_agrees for r in results)} of {sum(r.reference_checked for r in results)} re-scored"
        )
        lines.append(
            f"  (b) rows without their task, paired by position with a task row, where NeMo Gym's current code "
            f"and ours give the same reward: {sum(r.paired_agrees for r in results)} of "
            f"{sum(r.paired_checked for r in results)} paired"
        )
        runnable = [r for r in results if r.kind == "offline" and not r.needs_network]
        lines.append(
            f"  offline without the network: {len(runnable)} envs, tests pass AND >=95% match with NeMo Gym's "
            f"current code {sum(bool(r.tests_ok) and r.match_ok_with_reference for r in runnable)}"
        )
        for r in checked:
            lines.append(f"  {r.name}: {'; '.join(note for note in (r.reference_note, r.paired_note) if note)}")
    lines.append(f"{len(results)} environments in {wall_s:.0f} s with {jobs} job(s)")
    return "\n".join(lines)


def venv_conflicts(timeout: float = 300.0) -> list[str]:
    """`pip check`'s version conflicts in this interpreter's environment. One environment's requirements
    installed into it (wmt_translation's unbabel-comet wants transformers<5, so huggingface-hub<1) can break
    a package others import (datasets 5 needs huggingface-hub>=1.31: `BucketNotFoundError` at import in
    aviary, evalplus, labbench2_vlm): such failures are the environment's, not the folders'."""
    code, output = run_bounded([sys.executable, "-m", "pip", "check"], PROJECT_ROOT, dict(os.environ), timeout)
    if code is None:
        return ["pip check timed out"]
    return [line.strip() for line in output.splitlines() if "has requirement" in line or " requires " in line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a NeMo Gym checkout (the folder holding resources_servers/)")
    parser.add_argument("--only", default="", help="comma-separated environment names (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="environments surveyed at once (default 2)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per step: tests, pip, verify")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds ng_run gets to start")
    parser.add_argument(
        "--install",
        action="store_true",
        help="pip install missing requirements into this interpreter's environment (fails offline for what "
        "the index cannot serve; reported per environment)",
    )
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary projects (paths on stderr)")
    parser.add_argument(
        "--reference-venv",
        type=Path,
        help="a venv where NeMo Gym itself is installed (`pip install -e <checkout>` plus the environments' "
        "requirements): offline rows whose reward differs from the stored one are scored again there by NeMo "
        "Gym's current code, and a stale stored reward it agrees with ours on is reported apart",
    )
    args = parser.parse_args(argv)

    servers_dir = args.checkout / "resources_servers"
    if not servers_dir.is_dir():
        print(f"ng_compat_survey: {servers_dir} does not exist (give the root of a NeMo Gym checkout)", file=sys.stderr)
        return 2
    env_dirs = sorted(path for path in servers_dir.iterdir() if path.is_dir() and not path.name.startswith((".", "_")))
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = wanted - {path.name for path in env_dirs}
        if unknown:
            print(f"ng_compat_survey: --only names no such environment: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        env_dirs = [path for path in env_dirs if path.name in wanted]
    if args.jobs < 1:
        print("ng_compat_survey: --jobs must be >= 1", file=sys.stderr)
        return 2
    if args.reference_venv is not None and not (args.reference_venv / "bin" / "python").is_file():
        print(f"ng_compat_survey: --reference-venv {args.reference_venv} has no bin/python", file=sys.stderr)
        return 2
    options = Options(
        timeout=args.timeout,
        start_timeout=args.start_timeout,
        install=args.install,
        keep=args.keep,
        reference_venv=args.reference_venv,
    )

    began = time.monotonic()
    results: dict[str, EnvResult] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(survey_one, path, options): path.name for path in env_dirs}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            name = futures[future]
            try:
                result = future.result()
            except Exception as error:  # a survey bug on one folder must not lose the others' results
                result = EnvResult(name, first_error=f"survey crashed: {type(error).__name__}: {error}")
            results[name] = result
            print(
                f"[{done}/{len(env_dirs)}] {name}: {result.kind}, tests_ok={result.tests_ok}, "
                f"started={result.started}, matched {result.matched}/{result.comparable} ({result.seconds:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    ordered = [results[path.name] for path in env_dirs]
    wall = time.monotonic() - began
    print(table(ordered))
    print()
    print(totals(ordered, wall, args.jobs))
    conflicts = venv_conflicts()
    if conflicts:
        print(f"this interpreter's environment has {len(conflicts)} version conflict(s) (pip check); imports may fail:")
        for line in conflicts:
            print(f"  {line}")
    if args.json:
        payload = {
            "checkout": str(args.checkout),
            "wall_s": round(wall, 1),
            "jobs": args.jobs,
            "environments": [
                {
                    key: value
                    for key, value in asdict(r).items()
                    if key not in ("mismatched", "taskless", "replay_differs", "replay_tasks", "replay_errors")
                }
                | {
                    "comparable": r.comparable,
                    "match_ok": r.match_ok,
                    "match_ok_with_reference": r.match_ok_with_reference,
                }
                for r in ordered
            ],
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
