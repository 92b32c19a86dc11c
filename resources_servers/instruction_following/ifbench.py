"""IFBench's verifiable instructions, as NeMo Gym's instruction_following rows name them: one pure checker
per instruction id, graded the way the verifiable-instructions package grades them (NeMo Gym's grader).

Same reward on the same row is the point, so each checker keeps that package's counting rules, quirks
included, and its docstring states them: keywords are matched as regular expressions anywhere in the
text (a keyword that is not a valid pattern follows nothing, as the package's error does), "words" are
whitespace-separated tokens unless a docstring says tokens, sentences are `split_sentences`'s, and
tokens are `tokens`'s (NLTK's Treebank conventions: punctuation and contractions are tokens of their
own). An argument the package would replace with a random value when it is missing or zero is taken
as given here: grading stays deterministic.

`IFBENCH_CHECKERS` maps instruction id -> checker; `checkers.py` merges it into `CHECKERS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

Checker = Callable[..., bool]
IFBENCH_CHECKERS: dict[str, Checker] = {}
TwoRelations = Literal["less than", "at least"]


def ifbench(instruction_id: str) -> Callable[[Checker], Checker]:
    def register(checker: Checker) -> Checker:
        IFBENCH_CHECKERS[instruction_id] = checker
        return checker

    return register


# ---- sentences and tokens ---------------------------------------------------------------------------

POINT, STOP = "<point>", "<stop>"
LETTER_GROUP = "([A-Za-z])"
STARTER_WORDS = (
    r"(Mr|Mrs|Ms|Dr|Prof|Capt|Cpt|Lt|He\s|She\s|It\s|They\s|Their\s|Our\s|We\s|But\s|However\s|That\s|This\s|Wherever)"
)
# In order: each rule protects a period that does not end a sentence (titles, web suffixes, decimals,
# initials, acronyms, company suffixes) or marks a sentence end the plain rule would miss (after a run
# of dots, after an acronym or a company suffix when a sentence starter follows).
SENTENCE_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(Mr|St|Mrs|Ms|Dr)[.]"), rf"\1{POINT}"),
    (re.compile(r"[.](com|net|org|io|gov|edu|me)"), rf"{POINT}\1"),
    (re.compile(r"([0-9])[.]([0-9])"), rf"\1{POINT}\2"),
]
LATE_SENTENCE_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"\s{LETTER_GROUP}[.] "), rf" \1{POINT} "),
    (re.compile(rf"([A-Z][.][A-Z][.](?:[A-Z][.])?) {STARTER_WORDS}"), rf"\1{STOP} \2"),
    (re.compile(rf"{LETTER_GROUP}[.]{LETTER_GROUP}[.]{LETTER_GROUP}[.]"), rf"\1{POINT}\2{POINT}\3{POINT}"),
    (re.compile(rf"{LETTER_GROUP}[.]{LETTER_GROUP}[.]"), rf"\1{POINT}\2{POINT}"),
    (re.compile(rf" (Inc|Ltd|Jr|Sr|Co)[.] {STARTER_WORDS}"), rf" \1{STOP} \2"),
    (re.compile(r" (Inc|Ltd|Jr|Sr|Co)[.]"), rf" \1{POINT}"),
    (re.compile(rf" {LETTER_GROUP}[.]"), rf" \1{POINT}"),
]
DOT_RUN = re.compile(r"\.{2,}")


def split_sentences(text: str) -> list[str]:
    """The package's sentence splitter's rules: a sentence ends after each `.`, `!` or `?` except where a
    rule above protects the period; a closing quote after the mark stays with its sentence; pieces are
    stripped and a trailing empty piece dropped (an empty piece inside stays: "a.. b" has one)."""
    text = f" {text}  ".replace("\n", " ")
    for pattern, replacement in SENTENCE_RULES:
        text = pattern.sub(replacement, text)
    text = DOT_RUN.sub(lambda run: POINT * len(run.group(0)) + STOP, text)
    text = text.replace("Ph.D.", f"Ph{POINT}D{POINT}")
    for pattern, replacement in LATE_SENTENCE_RULES:
        text = pattern.sub(replacement, text)
    for before, after in ((".”", "”."), ('."', '".'), ('!"', '"!'), ('?"', '"?')):
        text = text.replace(before, after)
    for mark in ".?!":
        text = text.replace(mark, mark + STOP)
    pieces = [piece.replace(POINT, ".").strip() for piece in text.split(STOP)]
    return pieces[:-1] if pieces and not pieces[-1] else pieces


SPLIT_OFF = re.compile(r"(\.\.\.|--|[*;@#$%&?!()\[\]{}<>“”‘’—–]|[,:](?!\d))")
OPENING_QUOTE = re.compile(r'(^|[\s(\[{<])"')
CONTRACTION = re.compile(r"(?i)(?<=[^'\s])('s|'m|'d|'ll|'re|'ve|n't)(?=\s|$)|(?<=[^'\s])(')(?=\s|$)")
FUSED_WORDS = re.compile(r"(?i)\b(can)(not)\b|\b(gon|wan)(na)\b|\b(got)(ta)\b|\b(gim|lem)(me)\b")
FINAL_PERIOD = re.compile(r"(?<!\.)\.(?=[\])}>\"'”’]*\s*$)")


def tokens(text: str) -> list[str]:
    """Word tokens as NLTK's word_tokenize gives them for these checkers: each sentence's final period,
    commas and colons (not before a digit), semicolons, brackets, `?`, `!`, `...` and `--` are tokens of
    their own, a straight double quote is "``" where it opens and "''" where it closes, and so are contractions ("don't" -> "do", "n't"); periods inside a sentence
    ("e.g.", "3.5") stay in their word, and so do hyphens."""
    found: list[str] = []
    for sentence in split_sentences(text):
        spaced = FINAL_PERIOD.sub(" . ", sentence)
        spaced = OPENING_QUOTE.sub(r"\1 `` ", spaced).replace('"', " '' ")
        spaced = SPLIT_OFF.sub(r" \1 ", spaced)
        spaced = FUSED_WORDS.sub(lambda m: " ".join(part for part in m.groups() if part), spaced)
        spaced = CONTRACTION.sub(lambda m: " " + (m.group(1) or m.group(2)), spaced)
        found.extend(spaced.split())
    return found


def regex_count(keyword: str, text: str) -> int | None:
    """How often `keyword` matches anywhere (case-insensitive, as a pattern); None if it is no pattern."""
    try:
        return len(re.findall(keyword, text, flags=re.IGNORECASE))
    except re.error:
        return None


def first_of(value: str | list[str]) -> str:
    """The package takes the first entry when an argument arrives as a list."""
    return (value if isinstance(value, str) else value[0]).strip()


def two_pieces(pieces: list[str]) -> bool:
    """Exactly two non-empty pieces; an empty piece is forgiven only first or last."""
    inner_empty = any(not piece.strip() for piece in pieces[1:-1])
    edges_empty = sum(not pieces[i].strip() for i in {0, len(pieces) - 1})
    return not inner_empty and len(pieces) - edges_empty == 2


def relation_holds(count: int, relation: str, target: int) -> bool:
    """IFBench's two relations; any other relation follows nothing (the package refuses it)."""
    if relation == "less than":
        return count < target
    if relation == "at least":
        return count >= target
    return False


# ---- count: and letters: ---------------------------------------------------------------------------

LOWERCASE_WORD = re.compile(r"\b[a-z]+\b")
ASCII_LETTER = re.compile(r"[A-Za-z]")
STARRED_DIVIDER = re.compile(r"\s?\*\*\*\s?")


@ifbench("count:lowercase_counting")
def lowercase_counting(text: str, *, N: int) -> bool:  # noqa: N803 (IFBench's argument name)
    """At most N all-lowercase words in the whole reply (every occurrence counts)."""
    return len(LOWERCASE_WORD.findall(text)) <= N


@ifbench("letters:letter_counting")
def letter_counting(text: str, *, N: int, relation: TwoRelations) -> bool:  # noqa: N803
    """At least / fewer than N ASCII letters."""
    return relation_holds(len(ASCII_LETTER.findall(text)), relation, N)


@ifbench("letters:letter_counting2")
def letter_counting2(text: str, *, letter: str, let_frequency: int, let_relation: TwoRelations) -> bool:
    """The letter (either case) appears at least / fewer than `let_frequency` times."""
    return relation_holds(text.lower().count(letter.strip().lower()), let_relation, let_frequency)


@ifbench("count:counting_composition")
def counting_composition(text: str, *, n_sent: int, n_words: int) -> bool:
    """Three paragraphs divided by `***`, each of exactly `n_sent` sentences of exactly `n_words` tokens
    (a sentence's final period is a token). An empty paragraph, even before the first divider, fails."""
    pieces = STARRED_DIVIDER.split(text)
    if any(not piece.strip() for piece in pieces[1:-1]):
        return False
    for piece in pieces:
        sentences = split_sentences(piece)
        if len(sentences) != n_sent or any(len(tokens(sentence)) != n_words for sentence in sentences):
            return False
    return len(pieces) - sum(not pieces[i].strip() for i in {0, len(pieces) - 1}) == 3


@ifbench("count:count_unique")
def count_unique(text: str) -> bool:
    """No token repeats (case-sensitive; punctuation tokens count, so two sentences ending in "." repeat)."""
    found = tokens(text)
    return len(found) == len(set(found))


@ifbench("count:count_increment_word")
def count_increment_word(text: str, *, keyword1: str, keyword2: str) -> bool:
    """keyword1 matches exactly once and keyword2 exactly twice."""
    return regex_count(keyword1.strip(), text) == 1 and regex_count(keyword2.strip(), text) == 2


# ---- paragraphs: -----------------------------------------------------------------------------------


@ifbench("paragraphs:paragraphs")
def two_paragraphs(text: str) -> bool:
    """Exactly two paragraphs divided by `***`."""
    return two_pieces(STARRED_DIVIDER.split(text))


@ifbench("paragraphs:paragraphs2")
def two_paragraphs_by_blank_line(text: str) -> bool:
    """Exactly two paragraphs divided by "\\n\\n" (a line of spaces does not divide; "\\n\\n\\n\\n" makes an empty piece)."""
    return two_pieces(text.split("\n\n"))


# ---- first_word: and last_word: ---------------------------------------------------------------------

NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]")


@ifbench("first_word:first_word_sent")
def first_word_sent(text: str, *, first_word: str | list[str]) -> bool:
    """Every sentence starts with `first_word` (case-insensitive; the token as written, punctuation and all).
    A list of words follows nothing: the package fails on it (unlike last_word_sent, which takes the first)."""
    if not isinstance(first_word, str):
        return False
    word = first_word.strip().lower()
    return all(s.strip() and s.split()[0].lower() == word for s in split_sentences(text))


@ifbench("first_word:first_word_answer")
def first_word_answer(text: str, *, first_word: str) -> bool:
    """The reply's first whitespace-separated token is `first_word` (case-insensitive, punctuation and all)."""
    found = text.split()
    return bool(found) and found[0].lower() == first_word.strip().lower()


@ifbench("last_word:last_word_sent")
def last_word_sent(text: str, *, last_word: str | list[str]) -> bool:
    """Every sentence's last token, punctuation removed, is `last_word` (case-insensitive)."""
    word = first_of(last_word).lower()
    return all(s.strip() and NOT_WORD_OR_SPACE.sub("", s.split()[-1]).lower() == word for s in split_sentences(text))


@ifbench("last_word:last_word_answer")
def last_word_answer(text: str, *, last_word: str) -> bool:
    """The reply's last whitespace-separated token, punctuation removed, is `last_word` (case-insensitive)."""
    found = text.split()
    return bool(found) and NOT_WORD_OR_SPACE.sub("", found[-1]).lower() == last_word.strip().lower()


# ---- copy: and new: --------------------------------------------------------------------------------


def same_text(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


@ifbench("copy:copy")
def copy_verbatim(text: str, *, prompt_to_repeat: str) -> bool:
    """The reply is the prompt, nothing else (case and surrounding space aside)."""
    return same_text(text, prompt_to_repeat)


@ifbench("copy:copying_simple")
def copying_simple(text: str, *, prompt_to_repeat: str) -> bool:
    """The reply is the request repeated unchanged (case and surrounding space aside)."""
    return same_text(text, prompt_to_repeat)


@ifbench("copy:copying_multiple")
def copying_multiple(text: str, *, prompt_to_repeat: str, N: int) -> bool:  # noqa: N803
    """The request N times, the copies divided by `******`, nothing else."""
    copies = text.split("******")
    return len(copies) == N and all(same_text(copy, prompt_to_repeat) for copy in copies)


@ifbench("new:copy_span_idx")
def copy_span_idx(text: str, *, prompt_to_repeat: str, n_start: int, n_end: int) -> bool:
    """The reply is the prompt's characters n_start .. n_end, the end excluded as in a Python slice."""
    return same_text(text, prompt_to_repeat[n_start:n_end])


@ifbench("copy:repeat_phrase")
def repeat_phrase(text: str, *, phrase: str, small_n: int) -> bool:
    """Exactly `small_n` spans run from the phrase's first word to its last (shortest match, the words read
    as a pattern, case-sensitive); each has the phrase's word count and differs in at most one word, and
    the last span differs in exactly one (the package's rule: only the last span is checked for a change)."""
    reference = phrase.strip().split()
    try:
        spans = re.findall(rf"{reference[0]} .*? {reference[-1]}", text)
    except re.error:
        return False
    if not spans or len(spans) != small_n:
        return False
    changed = 0
    for span in spans:
        said = span.split()
        if len(said) != len(reference):
            return False
        changed = sum(a != b for a, b in zip(said, reference))
        if changed > 1:
            return False
    return changed == 1


# ---- detectable_format: ----------------------------------------------------------------------------


@ifbench("detectable_format:sentence_hyphens")
def sentence_hyphens(text: str) -> bool:
    """Sentences joined by hyphens with no spaces: each hyphen-separated piece has no surrounding space
    and equals the sentence found at its place when the hyphens are read as spaces."""
    pieces = text.split("-")
    sentences = split_sentences(text.replace("-", " "))
    return all(piece == piece.strip() and piece == sentence for piece, sentence in zip(pieces, sentences))


@ifbench("detectable_format:square_brackets")
def square_brackets(text: str) -> bool:
    """Every whitespace-separated word starts with `[` and ends with `]`."""
    return all(word.startswith("[") and word.endswith("]") for word in text.split())


@ifbench("detectable_format:bigram_wrapping")
def bigram_wrapping(text: str) -> bool:
    """Words taken in pairs from the start: the first of each pair starts with `<<`, the second ends with
    `>>` (a last unpaired word is free)."""
    found = text.split()
    return all(found[i].startswith("<<") and found[i + 1].endswith(">>") for i in range(0, len(found) - 1, 2))


# ---- punctuation: ----------------------------------------------------------------------------------


@ifbench("punctuation:punctuation_dot")
def punctuation_dot(text: str) -> bool:
    """No `.` anywhere (numbers and ellipses included)."""
    return "." not in text


@ifbench("punctuation:punctuation_exclamation")
def punctuation_exclamation(text: str) -> bool:
    """No `!` anywhere."""
    return "!" not in text


# ---- keywords: --------------------------------------------------------------------------------------


@ifbench("keywords:no_adjacent_consecutive")
def no_adjacent_consecutive(text: str) -> bool:
    """No two neighbouring words start with letters that follow each other in the alphabet ("a" then "b";
    case-insensitive, in that order only)."""
    initials = [word[0].lower() for word in text.split()]
    if any(len(initial) != 1 for initial in initials):
        return False  # a character whose lower case is two characters: the package refuses it
    return all(ord(second) - ord(first) != 1 for first, second in zip(initials, initials[1:]))


@ifbench("keywords:word_once")
def word_once(text: str, *, keyword: str) -> bool:
    """The keyword matches exactly once (anywhere, so inside a longer word too)."""
    return regex_count(keyword.strip(), text) == 1


@ifbench("keywords:word_count_different_numbers")
def word_count_different_numbers(text: str, *, keyword: str, frequency: int, relation: TwoRelations) -> bool:
    """The keyword matches at least / fewer than `frequency` times."""
    count = regex_count(keyword.strip(), text)
    return count is not None and relation_holds(count, relation, frequency)


@ifbench("keywords:exclude_word_harder")
def exclude_word_harder(text: str, *, keyword: str, instruction: str | None = None) -> bool:
    """The keyword never appears with a space on each side (case-sensitive); at the very start or end, or
    next to punctuation, it is not seen. `instruction` only served to pick a keyword when none was given."""
    return f" {keyword.strip()} " not in text


@ifbench("keywords:palindrome")
def palindrome(text: str) -> bool:
    """Some whitespace-separated word reads the same backwards (case-sensitive; one letter, or a
    punctuation mark standing alone, is one)."""
    return any(word == word[::-1] for word in text.split())


@ifbench("keywords:keyword_specific_position")
def keyword_specific_position(text: str, *, keyword: str | list[str], n: int, m: int) -> bool:
    """The n-th sentence's m-th token is the keyword (case-sensitive; both counted from 1)."""
    sentences = split_sentences(text)
    if n < 1 or len(sentences) < n:
        return False
    found = tokens(sentences[n - 1])
    return 1 <= m <= len(found) and found[m - 1] == first_of(keyword)


@ifbench("keywords:start_end")
def start_end(text: str) -> bool:
    """The first and last tokens are the same word (case-insensitive); a final period is a token, so
    ending with punctuation fails."""
    found = tokens(text)
    return len(found) >= 2 and found[0].lower() == found[-1].lower()
