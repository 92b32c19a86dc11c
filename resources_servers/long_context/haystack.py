"""RULER-style synthetic retrieval tasks: needles (key -> 7-digit value) hidden in filler text.

Deterministic per seed, pure, no I/O. Four kinds:
  * `single`: one needle; ask for its value.
  * `multikey`: several needles with different keys; ask for one (the others are distractors).
  * `multivalue`: one key stated several times with different values; ask for all of them.
  * `multiquery`: several needles; ask for the values of several keys at once.
The context length is given in words (`context_words`); needles sit at evenly spread random depths.
"""

from __future__ import annotations

import random
from typing import Any, Literal

Kind = Literal["single", "multikey", "multivalue", "multiquery"]
KINDS: tuple[Kind, ...] = ("single", "multikey", "multivalue", "multiquery")

FILLER = [
    "The grass is green and the sky is blue.",
    "The sun rises in the east and sets in the west.",
    "A river runs through the valley below the old mill.",
    "Ships leave the harbor early when the tide is high.",
    "The library closes at six on most weekdays.",
    "Snow fell quietly over the mountain village all night.",
    "Bread from the corner bakery sells out before noon.",
    "The train to the coast stops at every small station.",
    "Children played in the park until the lamps came on.",
    "The market square fills with stalls on Saturdays.",
    "An old clock in the tower strikes every hour.",
    "Wind turned the blades of the windmill slowly.",
    "The garden behind the house grows tomatoes and beans.",
    "Fishermen mend their nets on the stone pier.",
    "The museum keeps maps that are three centuries old.",
    "A narrow road climbs through the pine forest.",
]
KEY_WORDS = [
    "amber",
    "basalt",
    "cobalt",
    "delta",
    "ember",
    "falcon",
    "garnet",
    "harbor",
    "indigo",
    "juniper",
    "kestrel",
    "lumen",
    "meadow",
    "nimbus",
    "onyx",
    "pepper",
    "quartz",
    "raven",
    "sierra",
    "tundra",
]


def needle(key: str, value: str) -> str:
    return f"One of the special magic numbers for {key} is: {value}."


def make_task(seed: int, kind: Kind, context_words: int, distractors: int = 3) -> dict[str, Any]:
    """The prompt pieces and answers for one task (no Responses wrapping)."""
    rng = random.Random(f"{seed}-{kind}-{context_words}")
    words = rng.sample(KEY_WORDS, 16)
    keys = [f"{a}-{b}" for a, b in zip(words[:8], words[8:])]  # 8 distinct keys of distinct words

    def value() -> str:
        return str(rng.randrange(1_000_000, 10_000_000))

    if kind == "single":
        needles, asked = [(keys[0], value())], [keys[0]]
    elif kind == "multikey":
        needles = [(key, value()) for key in keys[: distractors + 1]]
        asked = [keys[rng.randrange(len(needles))]]
    elif kind == "multivalue":
        needles, asked = [(keys[0], value()) for _ in range(distractors + 1)], [keys[0]]
    elif kind == "multiquery":
        needles = [(key, value()) for key in keys[: distractors + 1]]
        asked = rng.sample([key for key, _ in needles], 2)
    else:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    expected = [v for k, v in needles if k in asked]
    distractor_values = [v for k, v in needles if k not in asked]

    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < context_words:
        sentences.append(rng.choice(FILLER))
    slots = sorted(rng.sample(range(len(sentences) + 1), len(needles)))
    for offset, (slot, (key, val)) in enumerate(zip(slots, needles)):
        sentences.insert(slot + offset, needle(key, val))
    context = " ".join(sentences)
    if len(asked) == 1 and len(expected) == 1:
        question = f"What is the special magic number for {asked[0]} mentioned in the text?"
    else:
        question = f"What are all the special magic numbers for {' and '.join(asked)} mentioned in the text?"
    return {
        "context": context,
        "question": question,
        "expected_values": expected,
        "distractor_values": distractor_values,
        "asked_keys": asked,
    }
