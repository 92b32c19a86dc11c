"""Every name for one file is that file: the output lock, the side files and the input-is-output check
follow symlinks (of the file or of a parent directory) and hard links. The refusals here come before
any server is contacted, so no stack is needed; the running-collector version is in
test_output_promises.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nemo_gym import errors
from nemo_gym.aio import run_async
from nemo_gym.errors import OutputLockedError
from nemo_gym.rollouts import CollectionSpec, FileCollection, collect_to_file
from nemo_gym.rollouts.store import sidecar
from nemo_gym.testing.inprocess import free_port
from tests.conftest import TUTORIAL_AGENT, TUTORIAL_DATA, cli


def write_tasks(path: Path, count: int = 3) -> Path:
    row = json.loads(Path(TUTORIAL_DATA).read_text().splitlines()[0])
    path.write_text("".join(json.dumps(row | {"n": i}) + "\n" for i in range(count)))
    return path


def collect(tasks: Path | str, output: Path | str, *extra: str):
    # A port nobody listens on: these runs must stop before they would need a server.
    return cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={tasks}",
        f"+output_jsonl_fpath={output}",
        f"+head_server.port={free_port()}",
        *extra,
        timeout=60,
    )


def listing(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): b"" if path.is_dir() or path.is_symlink() else path.read_bytes()
        for path in sorted(directory.rglob("*"))
    }


def assert_refused_untouched(result, directory: Path, before: dict[str, bytes], *needles: str) -> None:
    assert listing(directory) == before  # the input byte for byte; not one file created (no lock file either)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line
    for needle in needles:
        assert needle in result.stderr, result.stderr


# --- 8. The output never overwrites the input ------------------------------------------------------------


def links_to(tasks: Path, how: str) -> Path:
    """Another name for `tasks`: the same path, a symlink, a hard link, or the path through a symlinked folder."""
    if how == "same path":
        return tasks
    if how == "symlink":
        link = tasks.with_name("link.jsonl")
        link.symlink_to(tasks.name)
        return link
    if how == "hard link":
        link = tasks.with_name("hard.jsonl")
        os.link(tasks, link)
        return link
    assert how == "symlinked folder"
    folder = tasks.parent / "via"
    folder.symlink_to(".", target_is_directory=True)
    return folder / tasks.name


@pytest.mark.parametrize(
    ("how", "mode"),
    [
        ("same path", "+overwrite=true"),
        ("same path", "+resume=true"),
        ("same path", None),
        ("symlink", "+overwrite=true"),
        ("hard link", "+overwrite=true"),
        ("symlinked folder", "+overwrite=true"),
    ],
)
def test_output_that_is_the_input_is_refused_before_anything_is_touched(tmp_path, how, mode):
    tasks = write_tasks(tmp_path / "a.jsonl")
    output = links_to(tasks, how)
    before = listing(tmp_path)
    result = collect(tasks, output, *([mode] if mode else []))
    assert_refused_untouched(result, tmp_path, before, f"{output} is the input file {tasks}", "+output_jsonl_fpath")
    if how != "same path":
        assert "symlink" in result.stderr or "hard link" in result.stderr  # says why two names are one file


SIDE_FILES = [
    ("run_failures.jsonl", "failures file"),
    ("run_materialized_inputs.jsonl", "materialized inputs file"),
    ("run_job.json", "job record"),
    ("run_groups.jsonl", "groups file"),
    ("run_quality.json", "quality report"),
    ("run_metrics.json", "metrics file"),
    ("run_aggregate_metrics.json", "aggregate metrics file"),
    ("run.jsonl.lock", "lock file"),
    ("run_groups.jsonl.tmp", "temporary groups file"),
]


@pytest.mark.parametrize(("input_name", "side"), [SIDE_FILES[0], SIDE_FILES[2], SIDE_FILES[7]])
def test_a_side_file_that_is_the_input_is_refused_before_anything_is_touched(tmp_path, input_name, side):
    tasks = write_tasks(tmp_path / input_name)
    output = tmp_path / "run.jsonl"
    before = listing(tmp_path)
    result = collect(tasks, output, "+overwrite=true")
    assert_refused_untouched(result, tmp_path, before, f"the {side} {tasks}", f"of {output} is the input file {tasks}")


@pytest.mark.parametrize(("input_name", "side"), SIDE_FILES)
@pytest.mark.parametrize("mode", ["overwrite", "resume"])
def test_every_side_file_is_checked_by_the_library(tmp_path, input_name, side, mode):
    tasks = write_tasks(tmp_path / input_name)
    before = listing(tmp_path)
    spec = CollectionSpec(agent_name=TUTORIAL_AGENT, input_jsonl_fpath=str(tasks))
    with pytest.raises(errors.OutputIsInputError) as refused:
        FileCollection(spec, tmp_path / "run.jsonl", mode).open()  # type: ignore[arg-type]
    assert str(refused.value).startswith(f"the {side} {tasks} of {tmp_path / 'run.jsonl'} is the input file")
    assert listing(tmp_path) == before


def test_a_side_file_that_is_the_input_through_a_link_is_refused(tmp_path):
    """The output is a symlink elsewhere: its side files are the target's, and one of those is the input."""
    data = tmp_path / "data"
    data.mkdir()
    tasks = write_tasks(data / "target_failures.jsonl")
    output = tmp_path / "run.jsonl"
    output.symlink_to(data / "target.jsonl")  # dangling until the first row is written
    before = listing(tmp_path)
    result = collect(tasks, output, "+overwrite=true")
    assert_refused_untouched(result, tmp_path, before, f"the failures file {tasks}", "is the input file")


def test_the_python_api_refuses_an_output_that_is_the_input(tmp_path):
    tasks = write_tasks(tmp_path / "a.jsonl")
    os.link(tasks, tmp_path / "hard.jsonl")
    before = listing(tmp_path)
    spec = CollectionSpec(agent_name=TUTORIAL_AGENT, input_jsonl_fpath=str(tasks))
    head = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(errors.OutputIsInputError, match="is the input file"):
        run_async(collect_to_file(head, spec, tmp_path / "hard.jsonl", mode="overwrite"))
    with pytest.raises(errors.OutputIsInputError, match="is the input file"):
        FileCollection(spec, tmp_path / "a.jsonl", "resume").open()
    assert listing(tmp_path) == before


# --- 7. The lock follows the file, not the name ------------------------------------------------------------


def test_every_name_for_the_output_shares_one_lock(tmp_path):
    """A collection holds the output; the same file under another name is refused with the same line."""
    tasks = write_tasks(tmp_path / "tasks.jsonl")
    (tmp_path / "real").mkdir()
    output = tmp_path / "real" / "out.jsonl"
    spec = CollectionSpec(agent_name=TUTORIAL_AGENT, input_jsonl_fpath=str(tasks))
    first = FileCollection(spec, output, "new")
    first.open()
    try:
        first.store.write_row({"_ng_task_index": 0, "_ng_rollout_index": 0, "reward": 1.0})
        with pytest.raises(OutputLockedError) as plain:
            FileCollection(spec, output, "resume").open()
        expected = str(plain.value)
        assert f"{output} is being written by another collector (PID {os.getpid()}" in expected

        (tmp_path / "link.jsonl").symlink_to(output)
        (tmp_path / "linked_dir").symlink_to(tmp_path / "real", target_is_directory=True)
        os.link(output, tmp_path / "hard.jsonl")
        for name in (tmp_path / "link.jsonl", tmp_path / "linked_dir" / "out.jsonl", tmp_path / "hard.jsonl"):
            for mode in ("new", "resume", "overwrite"):
                before = output.read_bytes()
                with pytest.raises(OutputLockedError) as other:
                    FileCollection(spec, name, mode).open()  # type: ignore[arg-type]
                if name.name == "hard.jsonl":  # no name in common: the file itself is locked
                    held = f"{name} is being written by another collector (PID {os.getpid()} holds the file itself"
                    assert str(other.value).startswith(held)
                else:
                    assert str(other.value) == expected, name  # literally the plain second collector's line
                assert output.read_bytes() == before
        assert not (tmp_path / "link.jsonl.lock").exists() and not (tmp_path / "hard.jsonl.lock").exists()
    finally:
        first.close()
    assert not Path(f"{output}.lock").exists()


def test_the_side_files_of_a_symlinked_output_are_the_targets(tmp_path):
    """Resuming through a symlink finds the job record, failures and groups of the file it points to."""
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "run.jsonl"
    link = tmp_path / "latest.jsonl"
    link.symlink_to(target)
    assert sidecar(link, "failures") == target.with_name("run_failures.jsonl")
    assert sidecar(tmp_path / "plain.jsonl", "failures") == tmp_path / "plain_failures.jsonl"

    tasks = write_tasks(tmp_path / "tasks.jsonl")
    spec = CollectionSpec(agent_name=TUTORIAL_AGENT, input_jsonl_fpath=str(tasks))
    with FileCollection(spec, target, "new") as written:
        written.store.write_row({"_ng_task_index": 0, "_ng_rollout_index": 0, "reward": 1.0})
    with FileCollection(spec, link, "resume") as resumed:
        assert resumed.opened is not None
        assert resumed.opened.done == {(0, 0)} and not resumed.opened.job_record_was_missing
        assert resumed.job_path == target.with_name("run_job.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.jsonl", "real", "tasks.jsonl"]
