"""Symbolic answer checking with math-verify, run confined (`scoring.py` in the sandbox).

math-verify parses model text with sympy, which evaluates it, and can hang in C code that no signal
interrupts (e.g. a huge power tower), so it never runs in the server process: each grading is a call
of a `nemo_gym.compute` confined scorer (warm sandboxed interpreters on this machine, sandboxed Ray
tasks when the server runs on Ray). A grading that misses its deadline is killed, so one
pathological answer cannot wedge the server; either way it scores 0 with the reason in the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nemo_gym.compute import ComputeSettings, ConfinedScorer, open_confined_scorer
from nemo_gym.errors import ComputeTimeoutError, ComputeWorkerDiedError, ConfinedCallError

SCORING_MODULE = Path(__file__).with_name("scoring.py")


@dataclass(frozen=True)
class GradeResult:
    reward: float
    extracted_answer: str | None
    error: str | None = None


def open_grader(settings: ComputeSettings) -> ConfinedScorer:
    """The confined math-verify scorer for a server; `await grader.start()` before the first grading."""
    return open_confined_scorer(SCORING_MODULE, settings, warmup="warm_up")


async def grade(grader: ConfinedScorer, expected_answer: str, generated_text: str) -> GradeResult:
    """Grade one answer; a timeout, a crash or a memory blow-up scores 0 with its reason."""
    settings = grader.settings
    try:
        graded = await grader.call("grade_answer", expected_answer, generated_text, max(1, int(settings.timeout_s)))
    except ComputeTimeoutError:
        return GradeResult(0.0, None, f"math-verify timed out after {settings.timeout_s:g} s")
    except ComputeWorkerDiedError:
        return GradeResult(0.0, None, "math-verify worker crashed")
    except ConfinedCallError as error:
        if str(error).startswith("MemoryError"):
            return GradeResult(0.0, None, f"math-verify ran out of memory ({settings.memory_mb} MB)")
        return GradeResult(0.0, None, f"math-verify failed: {error}")
    return GradeResult(float(graded["reward"]), graded["extracted_answer"], graded["error"])
