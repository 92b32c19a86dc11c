"""Base classes for the three server kinds (resources, model, agent) and the head server.

Environment, model and agent code imports from here:

    from nemo_gym.servers import SimpleResourcesServer, BaseResourcesServerConfig, BaseVerifyRequest, BaseVerifyResponse
"""

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
