"""wordle: guess a five-letter word in at most six tries through a `guess` tool.

Trains multi-turn play that uses feedback: each guess returns a mark per letter (green, yellow,
gray). The game lives on the server per rollout, keyed by the session id the agent carries from
`/seed_session` through every `guess` to `/verify`; verify frees it. Reward 1.0 on solving within
`max_guesses`, optionally scaled down by the guesses used.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field, field_validator

from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.servers.session import SESSION_ID_KEY
from resources_servers.wordle.game import PATTERN_CHAR, Game, InvalidGuess, normalize_guess


class WordleConfig(BaseResourcesServerConfig):
    reward_scaling: Literal["binary", "guesses"] = "binary"
    """binary: 1.0 for any solve. guesses: (max_guesses - used + 1) / max_guesses, so a first-try
    solve is 1.0 and a last-try solve 1/max_guesses."""
    max_sessions: int = Field(100_000, ge=1)
    """Most games held at once; a rollout that never reaches verify would otherwise leak its game."""


class WordleTask(BaseModel):
    target: str
    max_guesses: int = Field(6, ge=1, le=20)

    @field_validator("target")
    @classmethod
    def five_letters(cls, value: str) -> str:
        try:
            return normalize_guess(value)
        except InvalidGuess as error:
            raise ValueError(f"target: {error}") from None


class WordleSeedRequest(BaseSeedSessionRequest, WordleTask):
    pass


class GuessRequest(BaseModel):
    word: str


class WordleVerifyRequest(BaseVerifyRequest, WordleTask):
    pass


class WordleVerifyResponse(WordleVerifyRequest, BaseVerifyResponse):
    solved: bool
    guesses_used: int
    guesses: list[str]


class WordleServer(SimpleResourcesServer):
    config: WordleConfig
    games: dict[str, Game] = Field(default_factory=dict)
    """session id -> game. Handlers never await between read and write, so no lock is needed."""

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/guess")(self.guess)
        return app

    async def seed_session(self, request: Request, body: WordleSeedRequest) -> BaseSeedSessionResponse:
        self.games[request.session[SESSION_ID_KEY]] = Game(target=body.target, max_guesses=body.max_guesses)
        while len(self.games) > self.config.max_sessions:
            del self.games[next(iter(self.games))]
        return BaseSeedSessionResponse()

    async def guess(self, request: Request, body: GuessRequest) -> dict[str, Any]:
        game = self.games.get(request.session[SESSION_ID_KEY])
        if game is None:
            return {"error": "no game in this session (it was never seeded or is already scored)"}
        try:
            marks = game.play(body.word)
        except InvalidGuess as error:
            # The model sees why; the turn is not used up.
            return {
                "error": str(error),
                "guesses_used": len(game.guesses),
                "guesses_left": game.max_guesses - len(game.guesses),
            }
        return {
            "guess": game.guesses[-1].upper(),
            "feedback": [
                {"letter": letter.upper(), "mark": mark.value} for letter, mark in zip(game.guesses[-1], marks)
            ],
            "pattern": "".join(PATTERN_CHAR[mark] for mark in marks),
            "guesses_used": len(game.guesses),
            "guesses_left": game.max_guesses - len(game.guesses),
            "solved": game.solved,
            "game_over": game.over,
        }

    def reward(self, game: Game | None) -> float:
        if game is None or not game.solved:
            return 0.0
        if self.config.reward_scaling == "guesses":
            return (game.max_guesses - len(game.guesses) + 1) / game.max_guesses
        return 1.0

    async def verify(self, request: Request, body: WordleVerifyRequest) -> WordleVerifyResponse:
        game = self.games.pop(request.session[SESSION_ID_KEY], None)
        return WordleVerifyResponse(
            **body.model_dump(),
            reward=self.reward(game),
            solved=bool(game and game.solved),
            guesses_used=len(game.guesses) if game else 0,
            guesses=game.guesses if game else [],
        )


if __name__ == "__main__":
    WordleServer.run_webserver()
