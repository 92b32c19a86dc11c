"""Write sokoban task rows: generated levels (solvable by construction, checked by the BFS solver).

    python resources_servers/sokoban/generate_tasks.py --output tasks.jsonl --count 100 --seed 0 \
        [--width 7 --height 7 --boxes 2 --min-moves 8 --budget-factor 3]

Each row holds the level, `max_moves` (budget-factor x the shortest solution, at least 20), the
shortest solution's length and the seed that made it, so a row can be regenerated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from resources_servers.sokoban.board import Level, generate, solve  # noqa: E402

SYSTEM_PROMPT = (
    "You are playing Sokoban. The board uses: # wall, @ you, $ box, . goal, * box on a goal, + you on a goal. "
    "Call the `move` tool with one direction (up, down, left or right) per call. Moving into a box pushes it one "
    "cell if the cell beyond is free; boxes cannot be pulled. Push every box onto a goal within {max_moves} moves."
)
MOVE_TOOL = {
    "type": "function",
    "name": "move",
    "description": "Move one cell; pushes a box in the way if possible. Returns the new board.",
    "parameters": {
        "type": "object",
        "properties": {"direction": {"type": "string", "enum": ["up", "down", "left", "right"]}},
        "required": ["direction"],
        "additionalProperties": False,
    },
    "strict": True,
}


def task_row(seed: int, *, width: int, height: int, boxes: int, min_moves: int, budget_factor: int) -> dict[str, Any]:
    rows = generate(seed, width=width, height=height, boxes=boxes, min_moves=min_moves)
    shortest = len(solve(Level.parse(rows)) or [])
    max_moves = max(20, budget_factor * shortest)
    board = "\n".join(rows)
    return {
        "responses_create_params": {
            "input": [
                {"role": "developer", "content": SYSTEM_PROMPT.format(max_moves=max_moves)},
                {"role": "user", "content": f"Level {seed}:\n```\n{board}\n```\nMake your first move."},
            ],
            "tools": [MOVE_TOOL],
            "parallel_tool_calls": False,
        },
        "level": rows,
        "max_moves": max_moves,
        "shortest_solution_moves": shortest,
        "seed": seed,
        "id": f"sokoban-{seed}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=7)
    parser.add_argument("--height", type=int, default=7)
    parser.add_argument("--boxes", type=int, default=2)
    parser.add_argument("--min-moves", type=int, default=8)
    parser.add_argument("--budget-factor", type=int, default=3)
    args = parser.parse_args()
    with args.output.open("w", encoding="utf-8") as out:
        for seed in range(args.seed, args.seed + args.count):
            row = task_row(
                seed,
                width=args.width,
                height=args.height,
                boxes=args.boxes,
                min_moves=args.min_moves,
                budget_factor=args.budget_factor,
            )
            out.write(json.dumps(row) + "\n")
    print(f"wrote {args.count} tasks to {args.output}")


if __name__ == "__main__":
    main()
