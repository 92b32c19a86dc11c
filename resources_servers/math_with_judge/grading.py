"""Symbolic answer checking with math-verify, run as deadline-bound jobs of a `nemo_gym.compute` executor.

math-verify's parse/verify is CPU-heavy (sympy) and can hang in C code that no signal interrupts
(e.g. a huge power tower), so it never runs on a server's event loop: each grading is a job of the
server's executor (worker processes on this machine, or Ray tasks on the cluster when the server
runs on Ray). A job that misses its deadline has its worker killed and replaced, so one
pathological answer cannot wedge the server; either way it scores 0 with the reason in the row.
"""

from __future__ import annotations

from dataclasses import dataclass

from nemo_gym.compute import ComputeExecutor
from nemo_gym.errors import ComputeTimeoutError, ComputeWorkerDiedError


@dataclass(frozen=True)
class GradeResult:
    reward: float
    extracted_answer: str | None
    error: str | None = None


def _boxed_gold(expected_answer: str) -> str:
    return expected_answer if "\\boxed" in expected_answer else f"\\boxed{{{expected_answer}}}"


def grade_answer(expected_answer: str, generated_text: str, timeout_s: int) -> GradeResult:
    """Runs in a worker: 1.0 iff the generated text's answer is symbolically equal to the gold one."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold = parse(_boxed_gold(expected_answer), extraction_config=[LatexExtractionConfig()], parsing_timeout=timeout_s)
    predicted = parse(
        generated_text, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=timeout_s
    )
    extracted = str(predicted[0]) if predicted else None
    if not gold:
        return GradeResult(0.0, extracted, f"the expected answer {expected_answer!r} could not be parsed")
    if not predicted:
        return GradeResult(0.0, None)
    return GradeResult(1.0 if verify(gold, predicted, timeout_seconds=timeout_s) else 0.0, extracted)


def warm_up_math_verify() -> None:
    """Runs once in each new worker: imports sympy and math-verify before the first deadline starts."""
    grade_answer("1", "\\boxed{1}", 5)


async def grade(executor: ComputeExecutor, expected_answer: str, generated_text: str) -> GradeResult:
    """Grade one answer as a job of `executor`; a timeout, a crash or a memory blow-up scores 0 with its reason."""
    settings = executor.settings
    try:
        return await executor.submit(grade_answer, expected_answer, generated_text, max(1, int(settings.timeout_s)))
    except ComputeTimeoutError:
        return GradeResult(0.0, None, f"math-verify timed out after {settings.timeout_s:g} s")
    except ComputeWorkerDiedError:
        return GradeResult(0.0, None, "math-verify worker crashed")
    except MemoryError:
        return GradeResult(0.0, None, f"math-verify ran out of memory ({settings.memory_mb} MB)")
