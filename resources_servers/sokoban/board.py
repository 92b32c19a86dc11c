"""Sokoban rules, level generation by reverse play, and a BFS solver: pure functions, no I/O.

A level is a list of equal-length strings: `#` wall, ` ` floor, `.` goal, `$` box, `*` box on a
goal, `@` player, `+` player on a goal. Levels are generated backwards from a solved position: the
player walks and *pulls* boxes off their goals, and since every pull is a push played in reverse,
the start position is solvable by construction. The BFS solver double-checks it and gives the
shortest solution's length.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

Position = tuple[int, int]  # (row, column)
DIRECTIONS: dict[str, Position] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


@dataclass(frozen=True)
class State:
    player: Position
    boxes: frozenset[Position]


@dataclass(frozen=True)
class Level:
    walls: frozenset[Position]
    goals: frozenset[Position]
    start: State
    height: int
    width: int

    @staticmethod
    def parse(rows: list[str]) -> Level:
        if not rows or len({len(row) for row in rows}) != 1:
            raise ValueError("a level is a non-empty list of equal-length rows")
        walls, goals, boxes, players = set(), set(), set(), []
        for r, row in enumerate(rows):
            for c, cell in enumerate(row):
                if cell not in "# .$*@+":
                    raise ValueError(f"unknown cell {cell!r} at row {r}, column {c}")
                if cell == "#":
                    walls.add((r, c))
                if cell in ".*+":
                    goals.add((r, c))
                if cell in "$*":
                    boxes.add((r, c))
                if cell in "@+":
                    players.append((r, c))
        if len(players) != 1 or not boxes or len(boxes) != len(goals):
            raise ValueError("a level needs one player and as many boxes as goals (at least one)")
        return Level(frozenset(walls), frozenset(goals), State(players[0], frozenset(boxes)), len(rows), len(rows[0]))

    def render(self, state: State) -> list[str]:
        rows = []
        for r in range(self.height):
            row = []
            for c in range(self.width):
                p = (r, c)
                if p in self.walls:
                    row.append("#")
                elif p == state.player:
                    row.append("+" if p in self.goals else "@")
                elif p in state.boxes:
                    row.append("*" if p in self.goals else "$")
                else:
                    row.append("." if p in self.goals else " ")
            rows.append("".join(row))
        return rows

    def solved(self, state: State) -> bool:
        return state.boxes == self.goals

    def step(self, state: State, direction: str) -> State | None:
        """The state after moving, or None when the move is blocked (wall, or a box that cannot go)."""
        dr, dc = DIRECTIONS[direction]
        target = (state.player[0] + dr, state.player[1] + dc)
        if target in self.walls:
            return None
        if target in state.boxes:
            beyond = (target[0] + dr, target[1] + dc)
            if beyond in self.walls or beyond in state.boxes:
                return None
            return State(target, (state.boxes - {target}) | {beyond})
        return State(target, state.boxes)


def solve(level: Level, max_states: int = 200_000) -> list[str] | None:
    """A shortest move sequence from the start (BFS over player moves), or None if unsolvable
    within `max_states` explored positions."""
    start = level.start
    parents: dict[State, tuple[State, str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        if level.solved(state):
            moves = []
            while parents[state] is not None:
                state, move = parents[state]  # type: ignore[misc]
                moves.append(move)
            return moves[::-1]
        for direction in DIRECTIONS:
            following = level.step(state, direction)
            if following is not None and following not in parents:
                if len(parents) >= max_states:
                    return None
                parents[following] = (state, direction)
                queue.append(following)
    return None


def generate(
    seed: int,
    *,
    width: int = 7,
    height: int = 7,
    boxes: int = 2,
    reverse_steps: int = 60,
    inner_walls: int = 3,
    min_moves: int = 8,
) -> list[str]:
    """A solvable level: a walled room with a few inner walls, solved, then played backwards until
    its shortest solution takes at least `min_moves` moves."""
    rng = random.Random(seed)
    for _ in range(1000):
        walls = {(r, c) for r in range(height) for c in range(width) if r in (0, height - 1) or c in (0, width - 1)}
        interior = [(r, c) for r in range(1, height - 1) for c in range(1, width - 1)]
        walls |= set(rng.sample(interior, inner_walls))
        free = [p for p in interior if p not in walls]
        chosen = rng.sample(free, boxes + 1)
        goals, player = frozenset(chosen[:boxes]), chosen[boxes]
        level = Level(frozenset(walls), goals, State(player, goals), height, width)
        state = _play_backwards(level, rng, reverse_steps)
        if level.solved(state):
            continue  # every pull was undone or impossible; try another room
        rows = level.render(state)
        solution = solve(Level.parse(rows))
        if solution is not None and len(solution) >= min_moves:
            return rows
    raise RuntimeError(f"no solvable level found for seed {seed}")


def _play_backwards(level: Level, rng: random.Random, steps: int) -> State:
    state = level.start
    for _ in range(steps):
        dr, dc = rng.choice(list(DIRECTIONS.values()))
        target = (state.player[0] + dr, state.player[1] + dc)
        if target in level.walls or target in state.boxes:
            continue
        behind = (state.player[0] - dr, state.player[1] - dc)
        # Pull the box behind us (half the time), the reverse of pushing it forward.
        if behind in state.boxes and rng.random() < 0.5:
            state = State(target, (state.boxes - {behind}) | {state.player})
        else:
            state = State(target, state.boxes)
    return state
