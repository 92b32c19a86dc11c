"""Which packages an environment folder's `requirements.txt` (or `pyproject.toml`) asks for that this
Python lacks, and the pip command that installs them.

NeMo Gym builds a virtualenv per server from that file, which costs minutes on every fresh start. We
run every server in the installed environment instead (DESIGN: startup takes seconds), so the file
becomes a check: read it, compare it with `importlib.metadata` (offline, a few milliseconds), and
name what is missing with the command that installs it. Installing into this interpreter is an
opt-in (`+install_requirements=true`).

How the lines are read:
- comments (`# ...` at the start or after a space) and blank lines are skipped; `\\` joins lines;
- `name`, `name>=1.2`, `name[extra]==1.0`, `name; marker` are checked by name and version (a marker
  that does not hold here skips the line; an extra's own direct requirements must be present too);
- `name @ <url or path>` is checked by name only (a URL carries no version to compare);
- a bare URL (`git+https://host/org/repo.git#egg=name`) is checked under its `#egg=` name, else the
  last part of its path (a guess: pip learns the real name only by building it);
- NeMo Gym itself (`-e nemo-gym[dev] @ ../../`, `-e ../../`, `nemo-gym`): a line naming it, or a
  path to the project that holds `nemo_gym/`, means "this project", which is installed by definition;
- `-r other.txt` is read too; `-c` constraint files are ignored; other options (`--index-url`,
  `--extra-index-url`, `-f`, ...) are passed on to the install command.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nemo_gym.errors import ConfigError, RequirementsInstallError, RequirementsNotInstalledError

if TYPE_CHECKING:
    from packaging.requirements import Requirement

REQUIREMENTS_FILE = "requirements.txt"
# The names NeMo Gym's folders use for NeMo Gym itself, and our own distribution: all "this project".
SELF_NAMES = frozenset({"nemo-gym", "nemo-gym-lite"})
INSTALL_FLAG = "+install_requirements=true"
INSTALL_REQUIREMENTS_HELP = (
    "Install the packages a server folder's requirements.txt names and this Python lacks, with pip into this "
    "interpreter, before starting (default: name them and the install command, and stop)."
)

_COMMENT = re.compile(r"(^|\s)#.*$")
_SKIPPED_OPTIONS = ("-c", "--constraint")
_INCLUDE_OPTIONS = ("-r", "--requirement")
_EDITABLE_OPTIONS = ("-e", "--editable")


@dataclass(frozen=True)
class Needed:
    """One requirement that is not satisfied: how pip is told to install it, and why it is shown."""

    spec: str
    """The requirement as pip takes it (a local path made absolute)."""
    shown: str
    """The requirement as the user reads it, with the installed version when that is the problem."""
    installed: bool = False
    """The package is installed, only at a version outside the requirement's specifier."""


@dataclass
class FolderNeeds:
    """What one folder's requirements file asks for that this Python does not satisfy."""

    folder: Path
    source: Path
    absent: list[Needed] = field(default_factory=list)
    """Not installed at all (or installed without a requested extra): the server cannot import it."""
    other_version: list[Needed] = field(default_factory=list)
    """Installed at another version than pinned. NeMo Gym pins for a venv of the server's own; in a
    shared environment changing a version can break every other server, so this is a warning only."""
    pip_options: list[str] = field(default_factory=list)

    def add(self, needed: Needed) -> None:
        (self.other_version if needed.installed else self.absent).append(needed)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        line = _COMMENT.sub("", raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line:
            yield line
    if pending.strip():
        yield pending.strip()


def _is_url(spec: str) -> bool:
    return "://" in spec or spec.startswith("file:")


def _is_project(path: Path, project_root: Path) -> bool:
    path = path.resolve()
    return path == project_root.resolve() or (path / "nemo_gym" / "__init__.py").is_file()


def _local_name(path: Path) -> str:
    """The distribution name a local project declares (pyproject.toml), else its folder's name."""
    try:
        name = tomllib.loads((path / "pyproject.toml").read_text()).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        name = None
    return name if isinstance(name, str) and name else path.name


def _url_name(url: str) -> str:
    egg = re.search(r"[#&]egg=([A-Za-z0-9._-]+)", url)
    if egg:
        return egg.group(1)
    path = url.split("#", 1)[0].split("?", 1)[0].rstrip("/")
    last = path.rsplit("/", 1)[-1]
    return last.removesuffix(".git")


def _installed_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _extras_missing(req: Requirement) -> list[str]:
    """Direct requirements of `req`'s extras that are absent (one level: enough to catch `pkg[extra]`
    installed without its extra, without walking the whole dependency tree)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import InvalidRequirement
    from packaging.requirements import Requirement as Parsed

    try:
        declared = requires(req.name) or []
    except PackageNotFoundError:
        return []
    missing = []
    for line in declared:
        try:
            dependency = Parsed(line)
        except InvalidRequirement:
            continue
        if dependency.marker is None:
            continue
        for extra in req.extras:
            if dependency.marker.evaluate({"extra": extra}) and not dependency.marker.evaluate({"extra": ""}):
                if _installed_version(dependency.name) is None:
                    missing.append(dependency.name)
                break
    return missing


def _check_named(spec: str, req: Requirement) -> Needed | None:
    if req.marker is not None and not req.marker.evaluate():
        return None
    have = _installed_version(req.name)
    if have is None:
        return Needed(spec, spec)
    if req.url is None and req.specifier and not req.specifier.contains(have, prereleases=True):
        return Needed(spec, f"{spec} (have {have})", installed=True)
    if req.extras:
        lacking = _extras_missing(req)
        if lacking:
            return Needed(spec, f"{spec} (lacks {', '.join(lacking)})")
    return None


def _check_line(spec: str, base: Path, project_root: Path) -> Needed | None:
    """The requirement `spec` (one line, options removed) if this Python does not satisfy it."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(spec)
    except InvalidRequirement:
        req = None
    if req is not None:
        if _canonical(req.name) in SELF_NAMES:
            return None
        if req.url and not _is_url(req.url):
            local = (base / req.url).resolve()
            if _is_project(local, project_root):
                return None
            spec = spec.replace(req.url, str(local))
        return _check_named(spec, req)
    if _is_url(spec):
        name = _url_name(spec)
    else:
        local = (base / spec).resolve()
        if not local.exists():
            return Needed(spec, f"{spec} (no such path)")
        if _is_project(local, project_root):
            return None
        name, spec = _local_name(local), str(local)
    if _canonical(name) in SELF_NAMES:
        return None
    return Needed(spec, spec) if _installed_version(name) is None else None


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:  # an unbalanced quote: take the words as they stand
        return line.split()


def _split_option(words: list[str]) -> tuple[str, list[str]]:
    """`-rfile`, `--requirement=file` and `-r file` all as ("-r"/"--requirement", ["file"])."""
    first, rest = words[0], words[1:]
    if first.startswith("--") and "=" in first:
        name, value = first.split("=", 1)
        return name, [value, *rest]
    if not first.startswith("--") and len(first) > 2:
        return first[:2], [first[2:], *rest]
    return first, rest


def _read_requirements(path: Path, project_root: Path, needs: FolderNeeds, seen: set[Path]) -> None:
    if path.resolve() in seen:
        return
    seen.add(path.resolve())
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    for line in _logical_lines(text):
        if line.startswith("-"):
            words = _words(line)
            option, rest = _split_option(words)
            if option in _SKIPPED_OPTIONS:
                continue
            if option in _INCLUDE_OPTIONS and rest:
                _read_requirements(path.parent / rest[0], project_root, needs, seen)
                continue
            if option not in _EDITABLE_OPTIONS:
                needs.pip_options.extend(words)
                continue
            line = " ".join(rest)
        spec = re.split(r"\s+--", line, maxsplit=1)[0].strip()  # per-line options such as --hash
        if spec:
            missing = _check_line(spec, path.parent, project_root)
            if missing is not None:
                needs.add(missing)


def _read_pyproject(path: Path, project_root: Path, needs: FolderNeeds) -> None:
    try:
        declared = tomllib.loads(path.read_text()).get("project", {}).get("dependencies", [])
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: cannot read its [project] dependencies: {error}") from None
    for spec in declared if isinstance(declared, list) else []:
        missing = _check_line(str(spec), path.parent, project_root)
        if missing is not None:
            needs.add(missing)


def folder_needs(folder: Path, project_root: Path) -> FolderNeeds | None:
    """What `folder`'s requirements.txt (else its pyproject.toml dependencies) asks for that is not
    installed here; None when the folder declares nothing or everything is satisfied."""
    requirements = folder / REQUIREMENTS_FILE
    pyproject = folder / "pyproject.toml"
    if requirements.is_file():
        needs = FolderNeeds(folder, requirements)
        _read_requirements(requirements, project_root, needs, set())
    elif pyproject.is_file():
        needs = FolderNeeds(folder, pyproject)
        _read_pyproject(pyproject, project_root, needs)
    else:
        return None
    return needs if needs.absent or needs.other_version else None


def pip_install_args(specs: Iterable[Needed], options: Iterable[str] = ()) -> list[str]:
    """pip's arguments (after `pip`) that install `specs` in one resolver run."""
    return ["install", *dict.fromkeys(options), *dict.fromkeys(item.spec for item in specs)]


def _pip_command(specs: list[Needed], options: list[str]) -> str:
    """The install command as a user types it: `pip` when the `pip` on PATH belongs to this
    interpreter, else `<this python> -m pip`."""
    on_path = shutil.which("pip")
    pip = (
        "pip"
        if on_path and Path(on_path).parent == Path(sys.executable).parent
        else f"{shlex.quote(sys.executable)} -m pip"
    )
    return " ".join([pip, *(shlex.quote(arg) for arg in pip_install_args(specs, options))])


def _where(folder: Path, project_root: Path) -> str:
    try:
        return str(folder.resolve().relative_to(project_root.resolve()))
    except ValueError:
        return str(folder)


def _shown(items: list[Needed]) -> str:
    return ", ".join(item.shown for item in items)


def missing_message(needs: FolderNeeds, project_root: Path) -> str:
    """One line: the folder, what it needs, and the command that installs it."""
    return (
        f"{_where(needs.folder, project_root)} needs packages that are not installed: {_shown(needs.absent)}; "
        f"install them with: {_pip_command(needs.absent, needs.pip_options)} (or add {INSTALL_FLAG})"
    )


def other_version_message(needs: FolderNeeds, project_root: Path) -> str:
    """One line: the pins the installed versions do not meet; the server runs with what is installed."""
    return (
        f"{_where(needs.folder, project_root)} pins other versions than the installed ones: "
        f"{_shown(needs.other_version)}; it runs with the installed ones "
        f"(to switch this environment to its pins: {_pip_command(needs.other_version, needs.pip_options)})"
    )


def ensure_requirements(folders: Iterable[Path], project_root: Path, *, install: bool, command: str) -> None:
    """Check every folder's requirements before its server starts.

    Version pins the installed packages miss are a warning on stderr (one line per folder). Absent
    packages raise RequirementsNotInstalledError (one line per folder, with the install command), or
    with `install` are installed by pip into this interpreter first, in one run, and checked again.
    """
    unique = list(dict.fromkeys(folder.resolve() for folder in folders))
    found = [needs for needs in (folder_needs(folder, project_root) for folder in unique) if needs]
    for needs in found:
        if needs.other_version:
            print(f"{command}: warning: {other_version_message(needs, project_root)}", file=sys.stderr, flush=True)
    missing = [needs for needs in found if needs.absent]
    if not missing:
        return
    if not install:
        lines = [missing_message(needs, project_root) for needs in missing]
        raise RequirementsNotInstalledError(f"\n{command}: error: ".join(lines))
    args = pip_install_args(
        [item for needs in missing for item in needs.absent], [opt for needs in missing for opt in needs.pip_options]
    )
    pip = [sys.executable, "-m", "pip", *args]
    print(f"{command}: installing requirements: {shlex.join(pip)}", file=sys.stderr, flush=True)
    code = subprocess.call(pip)
    if code != 0:
        raise RequirementsInstallError(
            f"pip could not install the requirements of {', '.join(_where(n.folder, project_root) for n in missing)} "
            f"(exit code {code}; its output is above)"
        )
    for needs in missing:
        still = folder_needs(needs.folder, project_root)
        if still is not None and still.absent:
            # pip succeeded, yet the package is not seen under the name we check (a URL requirement
            # without #egg=, say): go on, and say what still looks absent.
            print(
                f"{command}: warning: after pip install, {_where(needs.folder, project_root)} still seems to lack: "
                f"{_shown(still.absent)}",
                file=sys.stderr,
                flush=True,
            )
