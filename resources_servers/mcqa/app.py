"""mcqa: multiple-choice questions answered in text; reward 1 iff the extracted letter is the expected one.

Trains answering multiple-choice knowledge questions in a parseable format. No tools. The letter is
taken from the last assistant message by, in order of priority:
  1. the row's `template_metadata.output_regex` (one pattern or a list, tried in order), when it
     matches and its last match gives an option letter (case-insensitive);
  2. else the row's `grading_mode`:
     * `strict_single_letter_boxed` (NeMo Gym's rule): the last `\\boxed{...}`, its `\\text{...}` wrappers
       peeled, holds one capital option letter set off by non-letters only (`B`, `{B}` as NeMo Gym's
       templates write `\\boxed{{B}}`, `(B)`), or opens with one and a label mark, the option's text
       after it ignored (`C: An individual with ...`, `C) ...`); a lowercase letter is not an answer;
     * `lenient_boxed`: the last `\\boxed{...}` holds a letter (`B`, `(B)`, `B.`, `\\text{B}`, `B: text`)
       or text that matches exactly one option;
     * `lenient_answer_colon`: the last `Answer: ...` line starts with a letter or holds text that
       matches exactly one option; without such a line, the whole reply may be one option's text.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.errors import InputDataError
from nemo_gym.openai_types import last_assistant_text
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)

GradingMode = Literal["strict_single_letter_boxed", "lenient_boxed", "lenient_answer_colon"]

BOXED = "\\boxed{"
# LaTeX wrappers a model puts around an answer inside a box: \text{B}, \textbf{B}, \mathrm{B}, ...
LATEX_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
# A lone letter, optionally in parentheses or followed by `.`, `)` or `:`.
LONE_LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?[.):]?$")
# A letter that opens a longer answer: `B: Paris`, `(B) Paris`, `B. Paris`.
LEADING_LETTER = re.compile(r"^\(?([A-Z])(?:\)|[.:]|\s*-)\s+\S")
# One capital letter set off by non-letters only: `{B}`, `(B)`, `B.` (NeMo Gym's strict boxed rule).
BRACKETED_LETTER = re.compile(r"[^A-Za-z]*([A-Z])[^A-Za-z]*")
# NeMo Gym's strict boxed rule: a box that opens with a capital and a label mark (`C: text`, `C) text`).
LABELLED_LETTER = re.compile(r"\s*([A-Z])\s*[:).\-]")
WHOLE_TEXT_WRAPPER = re.compile(r"\\text\{\s*(.*?)\s*\}", re.S)
ANSWER_LINE = re.compile(r"(?i:answer)\s*(?:(?i:is)\s*)?[:：]\s*(.*)")
EDGE_PUNCTUATION = " \t\n.,;:!?\"'`*_()[]"


class MCQAConfig(BaseResourcesServerConfig):
    pass


class TemplateMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    output_regex: str | list[str] | None = None


class MCQAVerifyRequest(BaseVerifyRequest):
    options: list[dict[str, Any]] = Field(default_factory=list)
    expected_answer: str
    grading_mode: GradingMode = "strict_single_letter_boxed"
    uuid: str | None = None
    template_metadata: TemplateMetadata | None = None


class MCQAVerifyResponse(MCQAVerifyRequest, BaseVerifyResponse):
    extracted_answer: str | None
    """The letter graded, uppercased; None when no answer could be read."""


def option_texts(options: list[dict[str, Any]]) -> dict[str, str]:
    """`[{"A": "Paris"}, {"B": "Rome"}]` -> `{"A": "Paris", "B": "Rome"}` (letters uppercased)."""
    return {letter.strip().upper(): str(text) for option in options for letter, text in option.items()}


def normalize(text: str) -> str:
    text = LATEX_WRAPPER.sub(r"\1", text).replace("$", "")
    return " ".join(text.split()).strip(EDGE_PUNCTUATION).casefold()


def boxed_contents(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` in order, with nested braces balanced (`\\boxed{\\text{B}}`)."""
    contents: list[str] = []
    start = text.find(BOXED)
    while start != -1:
        depth, index = 1, start + len(BOXED)
        while index < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        if depth == 0:
            contents.append(text[start + len(BOXED) : index - 1])
        start = text.find(BOXED, index if depth == 0 else start + len(BOXED))
    return contents


def _valid(letter: str, options: dict[str, str]) -> str | None:
    letter = letter.upper()
    return letter if not options or letter in options else None


def lone_letter(text: str, options: dict[str, str]) -> str | None:
    match = LONE_LETTER.match(LATEX_WRAPPER.sub(r"\1", text).strip())
    return _valid(match.group(1), options) if match else None


def unique_option_match(text: str, options: dict[str, str]) -> str | None:
    """The one option whose text equals `text` (or, failing that, is contained in it); None if 0 or 2+."""
    wanted = normalize(text)
    if not wanted:
        return None
    normalized = {letter: normalize(option) for letter, option in options.items()}
    exact = [letter for letter, text in normalized.items() if text and text == wanted]
    contained = [
        letter for letter, text in normalized.items() if text and re.search(rf"(?<!\w){re.escape(text)}(?!\w)", wanted)
    ]
    for matches in (exact, contained):
        if len(matches) == 1:
            return matches[0]
        if matches:
            return None  # ambiguous: several options fit
    return None


def letter_or_option_text(text: str, options: dict[str, str]) -> str | None:
    stripped = LATEX_WRAPPER.sub(r"\1", text).strip().strip("*_ ")
    letter = lone_letter(stripped, options)
    if letter is None and (match := LEADING_LETTER.match(stripped)):
        letter = _valid(match.group(1), options)
    return letter or unique_option_match(stripped, options)


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{`, or None when there is none or it is never closed."""
    start = text.rfind(BOXED)
    if start == -1:
        return None
    content = boxed_contents(text[start:])
    return content[0] if content else None


def extract_strict_boxed(text: str, options: dict[str, str]) -> str | None:
    content = last_boxed(text)
    if content is None:
        return None
    content = content.strip()
    while wrapped := WHOLE_TEXT_WRAPPER.fullmatch(content):
        content = wrapped.group(1)
    match = BRACKETED_LETTER.fullmatch(content) or LABELLED_LETTER.match(content)
    return _valid(match.group(1), options) if match else None


def extract_lenient_boxed(text: str, options: dict[str, str]) -> str | None:
    boxes = boxed_contents(text)
    return letter_or_option_text(boxes[-1], options) if boxes else None


def extract_answer_colon(text: str, options: dict[str, str]) -> str | None:
    lines = [match.group(1) for line in text.splitlines() if (match := ANSWER_LINE.search(line))]
    if not lines:  # no answer line: accept a reply that is exactly one option's text, nothing looser
        reply = normalize(text)
        exact = [letter for letter, option in options.items() if reply and normalize(option) == reply]
        return exact[0] if len(exact) == 1 else None
    rest = lines[-1].strip().strip("*_ ")
    # An uppercase letter may open a longer answer; a lowercase one only counts alone ("Answer: a cell" is text).
    match = re.match(r"^\(?([A-Z])\)?(?![\w'])", rest)
    letter = _valid(match.group(1), options) if match else lone_letter(rest, options)
    return letter or unique_option_match(rest, options)


EXTRACTORS = {
    "strict_single_letter_boxed": extract_strict_boxed,
    "lenient_boxed": extract_lenient_boxed,
    "lenient_answer_colon": extract_answer_colon,
}


def extract_with_regex(text: str, pattern: str, options: dict[str, str]) -> tuple[bool, str | None]:
    """(matched, letter): whether the template's regex matched at all, and the letter its last match gives."""
    try:
        matches = list(re.finditer(pattern, text, re.IGNORECASE))
    except re.error as error:
        raise InputDataError(
            f"invalid regular expression {pattern!r}: {error}", field="template_metadata.output_regex"
        ) from error
    if not matches:
        return False, None
    last = matches[-1]
    groups: tuple[Any, ...] = last.groups()
    captured = next((group for group in groups if group), None) if groups else last.group(0)
    return True, letter_or_option_text(captured, options) if captured else None


def extract_answer(text: str, body: MCQAVerifyRequest) -> str | None:
    options = option_texts(body.options)
    regex = body.template_metadata.output_regex if body.template_metadata else None
    for pattern in [regex] if isinstance(regex, str) else regex or []:
        matched, letter = extract_with_regex(text, pattern, options)
        if letter is not None:
            return letter
    return EXTRACTORS[body.grading_mode](text, options)


class MCQAServer(SimpleResourcesServer):
    config: MCQAConfig

    async def verify(self, body: MCQAVerifyRequest) -> MCQAVerifyResponse:
        extracted = extract_answer(last_assistant_text(body.response.output), body)
        reward = 1.0 if extracted is not None and extracted == body.expected_answer.strip().upper() else 0.0
        return MCQAVerifyResponse(**body.model_dump(), reward=reward, extracted_answer=extracted)


if __name__ == "__main__":
    MCQAServer.run_webserver()
