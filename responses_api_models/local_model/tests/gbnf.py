"""A small reader of the GBNF subset `canonical_json_grammar` writes, for tests: does a text match a
grammar, and random texts a grammar admits. llama.cpp itself is exercised by the real-model tests."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

# Nodes: ("lit", text) ("cls", negated, ((lo, hi), ...)) ("ref", name) ("seq", nodes) ("alt", nodes) ("rep", node, lo, hi)
Node = tuple


@dataclass
class Grammar:
    rules: dict[str, Node]

    def matches(self, text: str, rule: str = "root") -> bool:
        @cache
        def ends(node: Node, position: int) -> frozenset[int]:
            kind = node[0]
            if kind == "lit":
                return frozenset({position + len(node[1])}) if text.startswith(node[1], position) else frozenset()
            if kind == "cls":
                if position < len(text) and _in_class(node, text[position]):
                    return frozenset({position + 1})
                return frozenset()
            if kind == "ref":
                return ends(self.rules[node[1]], position)
            if kind == "alt":
                return frozenset().union(*(ends(option, position) for option in node[1]))
            if kind == "seq":
                current = frozenset({position})
                for part in node[1]:
                    current = frozenset().union(*(ends(part, at) for at in current)) if current else current
                return current
            _, inner, low, high = node
            reached, frontier, count = set(), {position}, 0
            if low == 0:
                reached.add(position)
            while frontier and (high is None or count < high) and count <= len(text):
                count += 1
                frontier = {end for at in frontier for end in ends(inner, at)}
                if count >= low:
                    reached |= frontier
            return frozenset(reached)

        return len(text) in ends(self.rules[rule], 0)

    def sample(self, rng: random.Random, rule: str = "root", alphabet: str = "") -> str:
        pool = alphabet or "aZ09 _-/'é中\x7f.:,{}[]\"\\\n\t"
        out: list[str] = []

        def walk(node: Node, depth: int) -> None:
            kind = node[0]
            if kind == "lit":
                out.append(node[1])
            elif kind == "cls":
                out.append(rng.choice([char for char in pool if _in_class(node, char)]))
            elif kind == "ref":
                walk(self.rules[node[1]], depth + 1)
            elif kind == "alt":
                options = node[1]
                if depth > 12:  # deep inside nested values: take a leaf (a literal or a short rule)
                    options = sorted(options, key=lambda option: _weight(option))[:1]
                walk(rng.choice(options), depth)
            elif kind == "seq":
                for part in node[1]:
                    walk(part, depth)
            else:
                _, inner, low, high = node
                top = low if depth > 12 else min(high if high is not None else low + 3, low + 3)
                for _ in range(rng.randint(low, top)):
                    walk(inner, depth + 1)

        walk(self.rules[rule], 0)
        return "".join(out)


def _weight(node: Node) -> int:
    return 0 if node[0] == "lit" else 1 if node[0] in ("cls", "ref") else 2


def _in_class(node: Node, char: str) -> bool:
    _, negated, ranges = node
    inside = any(low <= ord(char) <= high for low, high in ranges)
    return inside != negated


def parse(text: str) -> Grammar:
    rules: dict[str, Node] = {}
    for line in text.strip().splitlines():
        name, _, body = line.partition(" ::= ")
        node, end = _alternatives(body, 0)
        assert end == len(body), f"unparsed grammar text in {line!r} at {end}"
        rules[name.strip()] = node
    return Grammar(rules)


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] == " ":
        at += 1
    return at


def _alternatives(text: str, at: int) -> tuple[Node, int]:
    options = []
    while True:
        sequence, at = _sequence(text, at)
        options.append(sequence)
        at = _skip(text, at)
        if at < len(text) and text[at] == "|":
            at += 1
            continue
        return (options[0] if len(options) == 1 else ("alt", tuple(options))), at


def _sequence(text: str, at: int) -> tuple[Node, int]:
    parts = []
    while True:
        at = _skip(text, at)
        if at >= len(text) or text[at] in "|)":
            return ("seq", tuple(parts)), at
        atom, at = _atom(text, at)
        while at < len(text) and text[at] in "?*+{":
            if text[at] == "{":
                close = text.index("}", at)
                low, _, high = text[at + 1 : close].partition(",")
                atom = ("rep", atom, int(low), int(high) if high else None)
                at = close + 1
            else:
                atom = ("rep", atom, 1 if text[at] == "+" else 0, 1 if text[at] == "?" else None)
                at += 1
        parts.append(atom)


def _char(text: str, at: int) -> tuple[str, int]:
    if text[at] != "\\":
        return text[at], at + 1
    code = text[at + 1]
    if code == "x":
        return chr(int(text[at + 2 : at + 4], 16)), at + 4
    return {"n": "\n", "t": "\t", "r": "\r"}.get(code, code), at + 2


def _atom(text: str, at: int) -> tuple[Node, int]:
    if text[at] == '"':
        at += 1
        chars = []
        while text[at] != '"':
            char, at = _char(text, at)
            chars.append(char)
        return ("lit", "".join(chars)), at + 1
    if text[at] == "[":
        at += 1
        negated = text[at] == "^"
        at += negated
        ranges = []
        while text[at] != "]":
            low, at = _char(text, at)
            high = low
            if text[at] == "-" and text[at + 1] != "]":
                high, at = _char(text, at + 1)
            ranges.append((ord(low), ord(high)))
        return ("cls", negated, tuple(ranges)), at + 1
    if text[at] == "(":
        node, at = _alternatives(text, at + 1)
        at = _skip(text, at)
        assert text[at] == ")"
        return node, at + 1
    end = at
    while end < len(text) and (text[end].isalnum() or text[end] == "-"):
        end += 1
    assert end > at, f"unexpected {text[at]!r} at {at}"
    return ("ref", text[at:end]), end
