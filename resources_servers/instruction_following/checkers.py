"""IFEval-style verifiable instructions, and the IFBench ones NeMo Gym's rows use: one pure checker
per instruction id, written here.

Each checker takes the response text and the instruction's keyword arguments and returns whether
the text follows it. `CHECKERS` maps instruction id -> checker; `check_arguments` tells a task's
author exactly which argument is missing or unknown. Loose grading (`loose_variants`) retries a
checker on the text with its first and/or last line removed and with markdown emphasis stripped,
the usual allowance for a preamble like "Sure, here it is:".

Counting conventions: words are runs of letters, digits, apostrophes and hyphens; sentences end at
`.`, `!` or `?` followed by whitespace or the end; paragraphs are separated by blank lines (or by a
line of `***`); bullets are lines starting with `* ` or `- `. The IFBench checkers live in `ifbench.py`
(every IFBench id of the verifiable-instructions package NeMo Gym grades with, by its conventions).
"""

from __future__ import annotations

import inspect
import json
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from resources_servers.instruction_following.ifbench import IFBENCH_CHECKERS

if TYPE_CHECKING:
    from langdetect.detector_factory import DetectorFactory

Relation = Literal["less than", "at most", "at least", "exactly", "more than"]
Checker = Callable[..., bool]
CHECKERS: dict[str, Checker] = {}

WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")
SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
PARAGRAPH_SPLIT = re.compile(r"\n\s*(?:\*\*\*\s*\n\s*)?\n|\n\s*\*\*\*\s*\n")
BULLET = re.compile(r"^\s*[*-]\s+\S", re.MULTILINE)
HIGHLIGHT = re.compile(r"\*[^\n*]+\*")
PLACEHOLDER = re.compile(r"\[[^\[\]\n]+\]")
TITLE = re.compile(r"<<[^\n<>]+>>")
CONSTRAINED_ANSWERS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def instruction(instruction_id: str) -> Callable[[Checker], Checker]:
    def register(checker: Checker) -> Checker:
        CHECKERS[instruction_id] = checker
        return checker

    return register


def compare(count: int, relation: Relation, target: int) -> bool:
    return {
        "less than": count < target,
        "at most": count <= target,
        "at least": count >= target,
        "exactly": count == target,
        "more than": count > target,
    }[relation]


def words(text: str) -> list[str]:
    return WORD.findall(text)


def paragraphs(text: str) -> list[str]:
    return [part for part in PARAGRAPH_SPLIT.split(text.strip()) if part.strip()]


# ---- length ---------------------------------------------------------------------------------------


@instruction("length_constraints:number_words")
def number_words(text: str, *, num_words: int, relation: Relation) -> bool:
    return compare(len(words(text)), relation, num_words)


@instruction("length_constraints:number_sentences")
def number_sentences(text: str, *, num_sentences: int, relation: Relation) -> bool:
    pieces = [piece for piece in SENTENCE_END.split(text) if words(piece)]
    return compare(len(pieces), relation, num_sentences)


@instruction("length_constraints:number_paragraphs")
def number_paragraphs(text: str, *, num_paragraphs: int) -> bool:
    return len(paragraphs(text)) == num_paragraphs


@instruction("length_constraints:nth_paragraph_first_word")
def nth_paragraph_first_word(text: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    parts = paragraphs(text)
    if len(parts) != num_paragraphs or not 1 <= nth_paragraph <= len(parts):
        return False
    # IFEval's rule: the paragraph's first whitespace-separated token, opening quotes dropped, up to
    # its first . , ? ! or quote. A dash joins, so "Crash—emotion" is not the word "crash".
    token = parts[nth_paragraph - 1].split()[0].lstrip("'\"")
    return FIRST_WORD_END.split(token, maxsplit=1)[0].lower() == first_word.lower()


FIRST_WORD_END = re.compile(r"[.,?!'\"]")


# ---- keywords -------------------------------------------------------------------------------------


def _occurrences(text: str, keyword: str) -> int:
    return len(re.findall(rf"(?<![\w]){re.escape(keyword)}(?![\w])", text, re.IGNORECASE))


@instruction("keywords:existence")
def keywords_existence(text: str, *, keywords: list[str]) -> bool:
    return all(_occurrences(text, keyword) > 0 for keyword in keywords)


@instruction("keywords:frequency")
def keyword_frequency(text: str, *, keyword: str, frequency: int, relation: Relation) -> bool:
    return compare(_occurrences(text, keyword), relation, frequency)


@instruction("keywords:forbidden_words")
def forbidden_words(text: str, *, forbidden_words: list[str]) -> bool:
    return all(_occurrences(text, word) == 0 for word in forbidden_words)


@instruction("keywords:letter_frequency")
def letter_frequency(text: str, *, letter: str, let_frequency: int, let_relation: Relation) -> bool:
    return compare(text.lower().count(letter.lower()), let_relation, let_frequency)


# ---- format ---------------------------------------------------------------------------------------


@instruction("detectable_format:json_format")
def json_format(text: str) -> bool:
    stripped = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*\n(.*?)\n?```", stripped, re.DOTALL | re.IGNORECASE)
    try:
        json.loads(fenced.group(1) if fenced else stripped)
    except ValueError:
        return False
    return True


@instruction("detectable_format:number_bullet_lists")
def number_bullet_lists(text: str, *, num_bullets: int) -> bool:
    return len(BULLET.findall(text)) == num_bullets


@instruction("detectable_format:number_highlighted_sections")
def number_highlighted_sections(text: str, *, num_highlights: int) -> bool:
    highlights = [h for h in HIGHLIGHT.findall(text) if h.strip("*").strip()]
    return len(highlights) >= num_highlights


@instruction("detectable_format:multiple_sections")
def multiple_sections(text: str, *, section_spliter: str, num_sections: int) -> bool:
    headers = re.findall(rf"^\s*{re.escape(section_spliter)}\s+\d+", text, re.MULTILINE | re.IGNORECASE)
    return len(headers) >= num_sections


@instruction("detectable_format:title")
def title(text: str) -> bool:
    return TITLE.search(text) is not None


@instruction("detectable_format:constrained_response")
def constrained_response(text: str) -> bool:
    return text.strip() in CONSTRAINED_ANSWERS


# ---- start / end ----------------------------------------------------------------------------------


@instruction("startend:start_checker")
def start_checker(text: str, *, start_phrase: str) -> bool:
    return text.strip().lower().startswith(start_phrase.strip().lower())


@instruction("startend:end_checker")
def end_checker(text: str, *, end_phrase: str) -> bool:
    return text.strip().lower().endswith(end_phrase.strip().lower())


@instruction("startend:quotation")
def quotation(text: str) -> bool:
    stripped = text.strip()
    return len(stripped) >= 2 and stripped[0] == '"' and stripped[-1] == '"'


# ---- language -------------------------------------------------------------------------------------

RESPONSE_LANGUAGE = "language:response_language"
_detector_factory: DetectorFactory | None = None
_detector_lock = threading.Lock()


def language_detector() -> DetectorFactory:
    """langdetect's profiles (55 languages), loaded once: the reference IFEval asks langdetect which
    language a reply is in. Loading takes seconds, so the server does it off the event loop. Seeded,
    so one text always gets one answer (langdetect samples, and unseeded a short or mixed text can
    come out differently from call to call)."""
    global _detector_factory
    with _detector_lock:
        if _detector_factory is None:
            try:
                from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
            except ModuleNotFoundError as error:
                raise ModuleNotFoundError(
                    f"{RESPONSE_LANGUAGE} needs langdetect: pip install -e '.[envs]' (or pip install langdetect)",
                    name=error.name,
                ) from None
            factory = DetectorFactory()
            factory.load_profile(PROFILES_DIRECTORY)
            factory.set_seed(0)
            _detector_factory = factory
        return _detector_factory


@instruction(RESPONSE_LANGUAGE)
def response_language(text: str, *, language: str) -> bool:
    """The reply is in `language` (an ISO 639-1 code such as "kn" or "de") by langdetect, as IFEval
    checks it; a text langdetect finds no letters in counts as followed, as it does there."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = language_detector().create()
    detector.append(text)
    try:
        return bool(detector.detect() == language)
    except LangDetectException:
        return True


# ---- case and punctuation -------------------------------------------------------------------------


@instruction("change_case:english_lowercase")
def english_lowercase(text: str) -> bool:
    return bool(words(text)) and text == text.lower()


@instruction("change_case:english_capital")
def english_capital(text: str) -> bool:
    return bool(words(text)) and text == text.upper()


@instruction("change_case:capital_word_frequency")
def capital_word_frequency(text: str, *, capital_frequency: int, capital_relation: Relation) -> bool:
    shouted = [word for word in words(text) if word.isupper() and any(c.isalpha() for c in word)]
    return compare(len(shouted), capital_relation, capital_frequency)


@instruction("punctuation:no_comma")
def no_comma(text: str) -> bool:
    return "," not in text and "，" not in text


# ---- content --------------------------------------------------------------------------------------


@instruction("detectable_content:number_placeholders")
def number_placeholders(text: str, *, num_placeholders: int) -> bool:
    return len(PLACEHOLDER.findall(text)) >= num_placeholders


@instruction("detectable_content:postscript")
def postscript(text: str, *, postscript_marker: str = "P.S.") -> bool:
    return re.search(rf"^\s*{re.escape(postscript_marker)}", text, re.MULTILINE | re.IGNORECASE) is not None


@instruction("combination:repeat_prompt")
def repeat_prompt(text: str, *, prompt_to_repeat: str) -> bool:
    return text.strip().lower().startswith(prompt_to_repeat.strip().lower())


@instruction("combination:two_responses")
def two_responses(text: str) -> bool:
    parts = [part.strip() for part in text.split("******")]
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


# ---- IFBench (NeMo Gym's instruction_following rows): graded in ifbench.py -------------------------

CHECKERS.update(IFBENCH_CHECKERS)


# ---- arguments and loose grading ------------------------------------------------------------------


def check_arguments(instruction_id: str, kwargs: dict[str, Any]) -> str | None:
    """None when `kwargs` fit the checker, else one sentence naming the problem."""
    checker = CHECKERS.get(instruction_id)
    if checker is None:
        return (
            f"unknown instruction id {instruction_id!r} (this environment grades {len(CHECKERS)} ids: see checkers.py)"
        )
    parameters = dict(list(inspect.signature(checker).parameters.items())[1:])
    unknown = sorted(set(kwargs) - set(parameters))
    missing = sorted(name for name, p in parameters.items() if p.default is p.empty and name not in kwargs)
    if unknown:
        return f"{instruction_id}: unknown argument(s) {', '.join(unknown)}"
    if missing:
        return f"{instruction_id}: missing argument(s) {', '.join(missing)}"
    return None


def loose_variants(text: str) -> list[str]:
    """The text and the forgiving rewrites loose grading also tries."""
    lines = text.split("\n")
    cut = [text, "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    return [variant for base in cut for variant in (base, base.replace("*", ""))]


def follows(instruction_id: str, kwargs: dict[str, Any], text: str, loose: bool) -> bool:
    checker = CHECKERS[instruction_id]
    candidates = loose_variants(text) if loose else [text]
    return any(candidate.strip() and checker(candidate, **kwargs) for candidate in candidates)
