"""The vocabulary of a config: server types, reserved keys, domains and the ServerInstance value."""

from __future__ import annotations

import enum
import pathlib

import pydantic

SERVER_TYPES: tuple[str, ...] = ("resources_servers", "responses_api_models", "responses_api_agents")

# Top-level keys that are never server instances, even when they hold a dict (NeMo Gym v0.1.0 list).
RESERVED_KEYS: frozenset[str] = frozenset(
    {
        "config_paths",
        "entrypoint",
        "default_host",
        "head_server",
        "disallowed_ports",
        "head_server_deps",
        "python_version",
    }
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_HEAD_PORT = 11000


class Domain(enum.StrEnum):
    """What a resources server's tasks are about; required on every resources server."""

    math = "math"
    coding = "coding"
    agent = "agent"
    knowledge = "knowledge"
    instruction_following = "instruction_following"
    long_context = "long_context"
    safety = "safety"
    games = "games"
    e2e = "e2e"
    other = "other"
    translation = "translation"
    rlhf = "rlhf"


class HeadServerConfig(pydantic.BaseModel):
    """Where the head server (the registry every server and the collector ask) listens."""

    host: str = pydantic.Field(DEFAULT_HOST, description="Host of the head server (default: default_host).")
    port: int = pydantic.Field(DEFAULT_HEAD_PORT, description="Port of the head server.")
    allowed_hosts: list[str] = pydantic.Field(
        default_factory=list,
        description="Further names the head server answers to (a request naming another Host gets 421).",
    )


class SharedParameters(pydantic.BaseModel):
    """Keys every command accepts besides its own parameters."""

    config_paths: list[str] | None = pydantic.Field(None, description="YAML config files to merge (later ones win).")
    head_server: HeadServerConfig = pydantic.Field(default_factory=lambda: HeadServerConfig.model_validate({}))
    default_host: str = pydantic.Field(DEFAULT_HOST, description="Host for servers that set none.")
    model: str | None = pydantic.Field(
        None,
        description="Choose the policy model server without editing configs: local, openai/<model>, "
        "vllm/<model>@<base_url>, azure/<deployment> (keys from env.yaml's policy_api_key or OPENAI_API_KEY, "
        "AZURE_OPENAI_API_KEY, VLLM_API_KEY).",
    )
    error_on_almost_servers: bool = pydantic.Field(
        True, description="A server-shaped block that fails validation is an error (false: skip it with a warning)."
    )


class ServerInstance(pydantic.BaseModel, frozen=True):
    """One server to run: its unique name, what it is, where its code lives and where it listens."""

    name: str
    server_type: str
    implementation: str
    entrypoint: str
    host: str
    port: int
    directory: pathlib.Path
    num_replicas: int = 1
    """Copies to start under this one name (`num_replicas` in the server's block)."""
    ray_resources: dict[str, float] = pydantic.Field(default_factory=dict)
    """What one replica asks of a Ray cluster (`ray_resources` in the server's block)."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
