"""Write a new resources server folder from the templates beside this module.

`scaffold_resources_server(root, name)` creates `resources_servers/<name>/` holding a working
environment: `app.py` (one tool and a `verify`), `configs/<name>.yaml` (the resources server and
`<name>_simple_agent` on `policy_model`), `data/example.jsonl` (5 tasks), `tests/test_app.py` and a
README. With `confined_scoring=True`, `app.py` scores answers through `scoring.py`, run confined in
the sandbox (`nemo_gym.compute.open_confined_scorer`): the pattern for any environment whose
scoring parses model text with something that may evaluate it. Only `data/example_rollouts.jsonl` is left to collect; `collect_example_rollouts_command`
gives the command that does it offline.
"""

from __future__ import annotations

import json
import keyword
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from nemo_gym.config import Domain
from nemo_gym.errors import ConfigError, OutputExistsError, OutputWriteError

TEMPLATES = Path(__file__).with_name("templates")
RESOURCES_SERVERS = "resources_servers"
LOCAL_MODEL_CONFIG = "responses_api_models/local_model/configs/local_model.yaml"
MAX_NAME_LENGTH = 64  # names a module, a YAML key and files (`<name>_simple_agent`): far below any OS's 255 bytes
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class TemplateFile:
    template: str
    target: str  # relative to the new folder; "{name}" is filled in


FILES = (
    TemplateFile("app.py.tmpl", "app.py"),
    TemplateFile("config.yaml.tmpl", "configs/{name}.yaml"),
    TemplateFile("example.jsonl.tmpl", "data/example.jsonl"),
    TemplateFile("test_app.py.tmpl", "tests/test_app.py"),
    TemplateFile("README.md.tmpl", "README.md"),
)


CONFINED_FILES = (
    TemplateFile("app_confined.py.tmpl", "app.py"),
    TemplateFile("scoring.py.tmpl", "scoring.py"),
    *FILES[1:],
)


def check_name(name: str) -> None:
    """The folder name is also a Python package name (`resources_servers.<name>.app`), a YAML key and part
    of file names, so it is checked before any path is built from it (a 300-character name used to reach
    the file system and come back as an OSError traceback)."""
    if _NAME.match(name) and not keyword.iskeyword(name) and len(name) <= MAX_NAME_LENGTH:
        return
    shown = repr(name) if len(name) <= 40 else f"{name[:40]!r}... ({len(name)} characters)"
    raise ConfigError(
        f"environment name {shown} is not usable: it becomes the Python package resources_servers.<name>, "
        f"so use 1 to {MAX_NAME_LENGTH} lowercase letters, digits and underscores, starting with a letter and "
        f"not a Python keyword (e.g. my_env)"
    )


def class_prefix(name: str) -> str:
    """`word_count` -> `WordCount`, the prefix of the generated classes."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def collect_example_rollouts_command(name: str) -> str:
    """The shell command (run from the project root) that collects `data/example_rollouts.jsonl`
    on the embedded local model: no key, no network.

    It collects into `results/` and copies the rows into `data/` only when every rollout
    succeeded, so the collection's side files (failures, metrics, quality report) stay out of the
    environment's folder and a half-failed run never becomes its examples. Two rollouts at a time
    match the local model's two slots, so the first rows arrive early."""
    folder = f"{RESOURCES_SERVERS}/{name}"
    collected = f"results/{name}_example_rollouts.jsonl"
    parts = [
        "ng_collect_rollouts",
        f"+config_paths=[{folder}/configs/{name}.yaml,{LOCAL_MODEL_CONFIG}]",
        f"+agent_name={name}_simple_agent",
        f"+input_jsonl_fpath={folder}/data/example.jsonl",
        f"+output_jsonl_fpath={collected}",
        "+num_samples_in_parallel=2",
        "+overwrite=true",
    ]
    collect = " ".join(shlex.quote(part) for part in parts)
    return f"{collect} && cp {collected} {folder}/data/example_rollouts.jsonl"


def render(template: str, name: str, domain: str, description: str) -> str:
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    values = {
        "__DESCRIPTION_YAML__": json.dumps(description),  # a JSON string is a valid YAML scalar, quotes and all
        "__DESCRIPTION__": description,
        "__COLLECT_COMMAND__": collect_example_rollouts_command(name),
        "__CLASS__": class_prefix(name),
        "__DOMAIN__": domain,
        "__NAME__": name,
    }
    for placeholder, value in values.items():  # longest placeholders first, so none is a prefix of another
        text = text.replace(placeholder, value)
    return text


def scaffold_resources_server(
    root: Path, name: str, domain: str = "agent", description: str | None = None, *, confined_scoring: bool = False
) -> list[Path]:
    """Create `root/resources_servers/<name>/`; returns the files written. Refuses an existing folder."""
    check_name(name)
    try:
        Domain(domain)
    except ValueError:
        raise ConfigError(f"+domain={domain}: not a domain; use one of {', '.join(d.value for d in Domain)}") from None
    folder = root / RESOURCES_SERVERS / name
    if folder.exists():
        raise OutputExistsError(f"{folder} already exists; pick another name or remove the folder first")
    description = description or "A tool-using environment: the model measures a word with a tool and answers."
    rendered = [
        (folder / item.target.format(name=name), render(item.template, name, domain, description))
        for item in (CONFINED_FILES if confined_scoring else FILES)
    ]  # render everything first: a template error leaves no half-made folder
    written = []
    try:
        for path, text in rendered:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as error:
        shutil.rmtree(folder, ignore_errors=True)  # it did not exist before: leave no half-made environment
        raise OutputWriteError(f"cannot write {folder}: {error.strerror or error}", path=str(folder)) from None
    return written
