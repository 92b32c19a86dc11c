"""Base classes for the three server kinds (resources, model, agent) and the head server.

Environment, model and agent code imports from here:

    from nemo_gym.servers import SimpleResourcesServer, BaseResourcesServerConfig, BaseVerifyRequest, BaseVerifyResponse

Names are imported on first use (PEP 562): a process that needs one light submodule (the collector
reads `nemo_gym.servers.aggregate_metrics`) does not pay for FastAPI's import, ~0.5 s of its startup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nemo_gym.lazy_names import lazy_names

if TYPE_CHECKING:
    from nemo_gym.servers.agent import (
        AgentRunRequest,
        BaseResponsesAPIAgentConfig,
        ModelServerRef,
        ResourcesServerRef,
        ServerRef,
        SimpleResponsesAPIAgent,
    )
    from nemo_gym.servers.base import BaseServerConfig, JSONBytesResponse, SimpleServer
    from nemo_gym.servers.model import BaseResponsesAPIModelConfig, SimpleResponsesAPIModel, UpstreamModelConfig
    from nemo_gym.servers.resources import (
        BaseResourcesServerConfig,
        BaseRunRequest,
        BaseSeedSessionRequest,
        BaseSeedSessionResponse,
        BaseVerifyRequest,
        BaseVerifyResponse,
        SimpleResourcesServer,
    )
    from nemo_gym.servers.session import SESSION_ID_KEY

_SUBMODULE_OF = {
    **dict.fromkeys(
        ("AgentRunRequest", "BaseResponsesAPIAgentConfig", "ModelServerRef", "ResourcesServerRef", "ServerRef"),
        "agent",
    ),
    "SimpleResponsesAPIAgent": "agent",
    **dict.fromkeys(("BaseServerConfig", "JSONBytesResponse", "SimpleServer"), "base"),
    **dict.fromkeys(("BaseResponsesAPIModelConfig", "SimpleResponsesAPIModel", "UpstreamModelConfig"), "model"),
    **dict.fromkeys(
        (
            "BaseResourcesServerConfig",
            "BaseRunRequest",
            "BaseSeedSessionRequest",
            "BaseSeedSessionResponse",
            "BaseVerifyRequest",
            "BaseVerifyResponse",
            "SimpleResourcesServer",
        ),
        "resources",
    ),
    "SESSION_ID_KEY": "session",
}


__getattr__, __dir__ = lazy_names(__name__, _SUBMODULE_OF, globals())

__all__ = [
    "SESSION_ID_KEY",
    "AgentRunRequest",
    "BaseResourcesServerConfig",
    "BaseResponsesAPIAgentConfig",
    "BaseResponsesAPIModelConfig",
    "BaseRunRequest",
    "BaseSeedSessionRequest",
    "BaseSeedSessionResponse",
    "BaseServerConfig",
    "BaseVerifyRequest",
    "BaseVerifyResponse",
    "JSONBytesResponse",
    "ModelServerRef",
    "ResourcesServerRef",
    "ServerRef",
    "SimpleResourcesServer",
    "SimpleResponsesAPIAgent",
    "SimpleResponsesAPIModel",
    "SimpleServer",
    "UpstreamModelConfig",
]
