"""echo_word's tasks: a fixed word list, a few phrasings of the request, and a split that never shares a word.

    python -m resources_servers.echo_word.tasks > resources_servers/echo_word/data/example.jsonl

`tasks(words, seed)` pairs each word with a phrasing chosen by a seeded generator, so the same call
always gives the same rows. `split()` cuts the word list into training and held-out words once, so a
learning curve measured on the held-out rows is measured on words the policy never trained on.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

WORDS = (
    "apple banana cherry garden river mountain window pencil rocket candle "
    "forest silver dragon castle planet island bridge wizard anchor basket "
    "butter carpet circle cookie copper cotton desert dinner doctor dollar "
    "engine farmer finger flower friend galaxy ginger guitar hammer harbor "
    "helmet honey jacket jungle kettle kitten ladder lemon letter lizard "
    "magnet marble meadow mirror monkey needle orange oyster paddle parrot "
    "pepper pillow pirate pocket potato puzzle rabbit racket ribbon saddle "
    "salmon shadow shovel singer spider spoon statue sugar summer sunset "
    "tablet teapot thunder ticket tiger tomato tunnel turtle velvet violin "
    "wallet walnut winter yellow zebra button camera falcon lantern napkin"
).split()

PHRASINGS = (
    "Reply with only this word and nothing else: {word}",
    "Say the word {word}. Write just that one word.",
    "Repeat exactly one word back to me: {word}",
    "Your whole answer must be the single word '{word}'.",
    "Write the word {word} and nothing more.",
)


def task(word: str, phrasing: str) -> dict[str, Any]:
    return {
        "responses_create_params": {"input": [{"role": "user", "content": phrasing.format(word=word)}]},
        "word": word,
    }


def tasks(words: Sequence[str], seed: int = 0) -> list[dict[str, Any]]:
    """One row per word, its phrasing drawn by `random.Random(seed)`."""
    draw = random.Random(seed)
    return [task(word, draw.choice(PHRASINGS)) for word in words]


def split(held_out: int = 40, seed: int = 0) -> tuple[list[str], list[str]]:
    """(training words, held-out words): the list shuffled by `seed`, the last `held_out` kept apart."""
    words = list(WORDS)
    random.Random(seed).shuffle(words)
    return words[:-held_out], words[-held_out:]


if __name__ == "__main__":
    for row in tasks(["apple", "river", "candle", "planet", "violin"], seed=5):
        print(json.dumps(row))
