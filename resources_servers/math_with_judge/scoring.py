"""math-verify's grading, run in the sandbox (see nemo_gym.compute.open_confined_scorer).

math-verify parses the model's text with sympy (latex2sympy, `parse_expr`), which evaluates what it
parses, and can hang in C code that no signal interrupts (a huge power tower). So it never runs in
the server: each answer is graded in a confined fork of a warm interpreter that is killed at its
deadline. This file is shipped into the sandbox as source: standard library and math-verify only.
"""

from __future__ import annotations

from typing import Any


def _boxed_gold(expected_answer: str) -> str:
    return expected_answer if "\\boxed" in expected_answer else f"\\boxed{{{expected_answer}}}"


def grade_answer(expected_answer: str, generated_text: str, timeout_s: int) -> dict[str, Any]:
    """{"reward": 1.0 iff the generated answer is symbolically equal to the gold one, "extracted_answer",
    "error": why the gold answer could not be graded, or None}."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold = parse(_boxed_gold(expected_answer), extraction_config=[LatexExtractionConfig()], parsing_timeout=timeout_s)
    predicted = parse(
        generated_text, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=timeout_s
    )
    extracted = str(predicted[0]) if predicted else None
    if not gold:
        error = f"the expected answer {expected_answer!r} could not be parsed"
        return {"reward": 0.0, "extracted_answer": extracted, "error": error}
    if not predicted:
        return {"reward": 0.0, "extracted_answer": None, "error": None}
    equal = verify(gold, predicted, timeout_seconds=timeout_s)
    return {"reward": 1.0 if equal else 0.0, "extracted_answer": extracted, "error": None}


def warm_up() -> None:
    """Imports sympy and math-verify once per sandboxed interpreter, before any deadline starts."""
    grade_answer("1", "\\boxed{1}", 5)
