"""The rules of Wordle as pure functions: per-letter feedback and the state of one game."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

WORD_LENGTH = 5


class Mark(StrEnum):
    green = "green"  # right letter, right place
    yellow = "yellow"  # in the word, elsewhere
    gray = "gray"  # not in the word (or all its copies are already marked)


PATTERN_CHAR = {Mark.green: "G", Mark.yellow: "Y", Mark.gray: "-"}


class InvalidGuess(ValueError):
    """A guess that is not five letters; it does not use up a turn."""


def normalize_guess(word: str) -> str:
    guess = word.strip().lower()
    if len(guess) != WORD_LENGTH or not guess.isascii() or not guess.isalpha():
        raise InvalidGuess(f"a guess must be exactly {WORD_LENGTH} letters a-z, got {word!r}")
    return guess


def feedback(guess: str, target: str) -> list[Mark]:
    """Per-letter marks. Greens are taken first; a repeated letter is yellow only while the target
    still has unmatched copies of it, left to right (the official rule)."""
    marks = [Mark.gray] * len(guess)
    unmatched = Counter(t for g, t in zip(guess, target) if g != t)
    for i, (g, t) in enumerate(zip(guess, target)):
        if g == t:
            marks[i] = Mark.green
    for i, g in enumerate(guess):
        if marks[i] is Mark.gray and unmatched[g] > 0:
            marks[i] = Mark.yellow
            unmatched[g] -= 1
    return marks


@dataclass
class Game:
    target: str
    max_guesses: int
    guesses: list[str] = field(default_factory=list)

    @property
    def solved(self) -> bool:
        return bool(self.guesses) and self.guesses[-1] == self.target

    @property
    def over(self) -> bool:
        return self.solved or len(self.guesses) >= self.max_guesses

    def play(self, word: str) -> list[Mark]:
        if self.over:
            raise InvalidGuess("the game is over: no more guesses are accepted")
        guess = normalize_guess(word)
        self.guesses.append(guess)
        return feedback(guess, self.target)
