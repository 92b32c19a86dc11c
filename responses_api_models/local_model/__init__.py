"""The embedded offline model: a small GGUF model served in-process, no API key, no network."""

from responses_api_models.local_model.engine import (
    LocalChatEngine,
    LocalModelRequestError,
    LocalModelRuntimeError,
    ModelWeightsNotFoundError,
    default_model_path,
)

__all__ = [
    "LocalChatEngine",
    "LocalModelRequestError",
    "LocalModelRuntimeError",
    "ModelWeightsNotFoundError",
    "default_model_path",
]
