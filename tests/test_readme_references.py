"""Everything the README tells a user to import or run exists: imports resolve and commands are installed."""

from __future__ import annotations

import importlib
import re
import tomllib

import pytest

from tests.conftest import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
PACKAGES = r"(?:nemo_gym|resources_servers|responses_api_models|responses_api_agents)"

# `from nemo_gym.testing import ScriptedOpenAI, NgRunProcess` anywhere: in a code block or inline.
FROM_IMPORTS = sorted(
    {
        (module, name.strip())
        for module, names in re.findall(rf"from ({PACKAGES}(?:\.\w+)*) import ([\w, ]+)", README)
        for name in names.split(",")
        if name.strip()
    }
)
# Dotted names quoted as code or as a string: `nemo_gym.sandbox`, "nemo_gym.testing.fixtures".
DOTTED = sorted(set(re.findall(rf"[`\"']({PACKAGES}(?:\.\w+)+)[`\"']", README)))
# Commands, not file names: `scripts/ng_compat_survey.py` is a script run with python.
COMMANDS = sorted(set(re.findall(r"(?<![/\w])(ng_\w+)\b(?!\.py)", README)))


def test_the_readme_names_the_helpers_a_new_user_looks_for():
    assert ("nemo_gym.testing", "ScriptedOpenAI") in FROM_IMPORTS
    assert "nemo_gym.rollouts.quality" in DOTTED and "ng_init_resources_server" in COMMANDS


@pytest.mark.parametrize(("module", "name"), FROM_IMPORTS)
def test_every_from_import_in_the_readme_works(module, name):
    assert hasattr(importlib.import_module(module), name), f"README: `from {module} import {name}` fails"


@pytest.mark.parametrize("dotted", DOTTED)
def test_every_dotted_name_in_the_readme_is_a_module_or_an_attribute(dotted):
    try:
        importlib.import_module(dotted)
    except ModuleNotFoundError:
        module, _, attribute = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), attribute), f"README names {dotted}, which does not exist"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_in_the_readme_is_a_console_script(command):
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command in scripts, f"README names {command}, which pyproject.toml does not install"
