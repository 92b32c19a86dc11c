"""nemo_gym.compute's confined scorer: a scorer module that evaluates its input (as sympy's parse_expr
and reasoning-gym's scorers do) runs in the sandbox, one killable fork of a warm interpreter per call."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from nemo_gym.compute import ComputeSettings, ConfinedScorer, open_confined_scorer
from nemo_gym.errors import ComputeTimeoutError, ComputeWorkerDiedError, ConfinedCallError, SandboxError
from tests.conftest import PROJECT_ROOT

SCORER = textwrap.dedent(
    """
    import os
    import time

    warmed = []


    def warm_up():
        warmed.append(os.getpid())


    def evaluate(text):
        return eval(text)  # what a careless scorer does with a model's answer


    def evaluate_forgivingly(text):
        try:
            return eval(text)
        except Exception:
            return 0.5  # partial credit: the refusal must still be reported


    def tamper():
        global evaluate
        evaluate = lambda text: 1.0  # every later answer would score 1.0, if this outlived the call
        return "tampered"


    def was_warmed():
        return bool(warmed)


    def environment():
        return dict(os.environ)


    def nap(seconds):
        time.sleep(seconds)
        return "awake"


    def spin():
        while True:
            pass


    def hoard():
        return len(bytearray(8 * 1024**3))


    def not_json():
        return object()
    """
)
SECRET = "sk-planted-confined-4411"


@pytest.fixture
async def scorer(tmp_path, monkeypatch) -> ConfinedScorer:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # in the server's environment, never in the sandbox's
    module = tmp_path / "scoring.py"
    module.write_text(SCORER)
    confined = open_confined_scorer(
        module, ComputeSettings(max_concurrent=2, timeout_s=2, memory_mb=512), warmup="warm_up"
    )
    await confined.start()
    yield confined
    await confined.aclose()


async def test_a_call_runs_the_module_warm_and_returns_json(scorer):
    assert scorer.backend == "local"
    assert await scorer.call("evaluate", "6 * 7") == 42
    assert await scorer.call("was_warmed") is True
    assert await scorer.call("evaluate", "[1, {'a': None}]") == [1, {"a": None}]


async def test_evaluated_text_sees_no_checkout_no_secrets_and_cannot_act(scorer, tmp_path):
    marker = tmp_path / "pwned.txt"
    readable = f"open({str(PROJECT_ROOT / 'pyproject.toml')!r}).read()"
    with pytest.raises(ConfinedCallError, match="FileNotFoundError"):
        await scorer.call("evaluate", readable)
    assert SECRET not in str(await scorer.call("environment"))
    for attack, what in [
        (f"__import__('os').system('id > {marker}')", "run a shell command (os.system)"),
        (f"__import__('subprocess').run(['touch', {str(marker)!r}])", "run a program (subprocess.Popen)"),
        (f"open({str(marker)!r}, 'w').write('x')", "write a file (open)"),
        ("__import__('socket').create_connection(('127.0.0.1', 9))", "open a network connection (socket.connect)"),
    ]:
        with pytest.raises(ConfinedCallError) as refused:
            await scorer.call("evaluate_forgivingly", attack)
        assert str(refused.value) == f"the scoring tried to {what} and was stopped"
    assert not marker.exists()


async def test_each_call_sees_the_interpreter_as_warm_up_left_it(scorer):
    assert await scorer.call("tamper") == "tampered"
    assert await scorer.call("evaluate", "0") == 0  # the monkeypatch died with its call's fork


async def test_a_call_past_its_limits_is_killed_with_the_reason_and_the_next_one_runs(scorer):
    with pytest.raises(ComputeTimeoutError, match="ran past its 2 s limit and was killed"):
        await scorer.call("nap", 60)
    with pytest.raises(ComputeTimeoutError, match="killed"):
        await scorer.call("spin")
    with pytest.raises(ConfinedCallError, match="MemoryError"):
        await scorer.call("hoard")
    with pytest.raises(ConfinedCallError, match="not JSON"):
        await scorer.call("not_json")
    with pytest.raises(ConfinedCallError, match="ZeroDivisionError"):
        await scorer.call("evaluate", "1 / 0")
    assert await scorer.call("evaluate", "1 + 1") == 2
    assert await scorer.call("nap", 0) == "awake"


async def test_hung_calls_hold_no_slot_after_their_deadline(scorer):
    # Two interpreters, four sleepers: all four are killed at their deadline, then a quick call runs.
    naps = await asyncio.gather(*(scorer.call("nap", 60) for _ in range(4)), return_exceptions=True)
    assert all(isinstance(nap, ComputeTimeoutError) for nap in naps)
    assert await scorer.call("evaluate", "3") == 3


async def test_an_interpreter_killed_from_inside_is_replaced(scorer):
    kill_parent = "__import__('os').kill(__import__('os').getppid(), 9)"
    with pytest.raises((ComputeWorkerDiedError, ConfinedCallError)):
        await scorer.call("evaluate", kill_parent)
    for _ in range(4):
        assert await scorer.call("evaluate", "2 ** 10") == 1024


async def test_a_module_that_cannot_load_fails_at_start_naming_it(tmp_path):
    module = tmp_path / "broken.py"
    module.write_text("import a_package_that_is_not_installed\n")
    confined = open_confined_scorer(module, ComputeSettings(max_concurrent=1))
    with pytest.raises(
        SandboxError, match="broken.py could not be loaded in the sandbox.*a_package_that_is_not_installed"
    ):
        await confined.start()
    with pytest.raises(SandboxError, match="missing.py"):
        open_confined_scorer(tmp_path / "missing.py", ComputeSettings())


def imports_of(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.strip().startswith(("import ", "from ")))


def test_what_is_shipped_into_the_sandbox_imports_nothing_of_the_project():
    # The runner and the environments' scorer modules are sent as source: the project is not there.
    for path in (
        PROJECT_ROOT / "nemo_gym" / "compute" / "_confined_runner.py",
        PROJECT_ROOT / "resources_servers" / "reasoning_gym" / "scoring.py",
        PROJECT_ROOT / "resources_servers" / "math_with_judge" / "scoring.py",
    ):
        imports = imports_of(path)
        assert imports and "nemo_gym" not in imports and "resources_servers" not in imports, path
