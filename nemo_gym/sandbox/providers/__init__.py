"""NeMo Gym's `nemo_gym.sandbox.providers` import path: the provider-facing names and the registry.

NeMo Gym's built-in container backends (`nemo_gym.sandbox.providers.docker`, ...) are not provided here.
"""

from nemo_gym.sandbox._containers import create_provider, get_provider_class, list_providers, register_provider
from nemo_gym.sandbox.providers.base import (
    ExecResult,
    SandboxCreateError,
    SandboxCreateVerificationError,
    SandboxEndpoint,
    SandboxExecResult,
    SandboxHandle,
    SandboxProvider,
    SandboxResources,
    SandboxSpec,
    SandboxStatus,
    SupportsSandboxEndpoint,
)

__all__ = [
    "ExecResult",
    "SandboxCreateError",
    "SandboxCreateVerificationError",
    "SandboxEndpoint",
    "SandboxExecResult",
    "SandboxHandle",
    "SandboxProvider",
    "SandboxResources",
    "SandboxSpec",
    "SandboxStatus",
    "SupportsSandboxEndpoint",
    "create_provider",
    "get_provider_class",
    "list_providers",
    "register_provider",
]
