"""External envs: a simulator in another process (or language, or machine) drives training
over TCP (RLlib's `ray.rllib.env.external`). The protocol: docs/external_env_protocol.md."""

from tunerl.env.external.client import (
    ExternalEnvClient,
    LocalInferenceClient,
    RemoteInferenceClient,
)
from tunerl.env.external.external_env_runner import ExternalEnvRunner
from tunerl.env.external.protocol import PROTOCOL_VERSION, ProtocolError, RemoteError

__all__ = [
    "PROTOCOL_VERSION",
    "ExternalEnvClient",
    "ExternalEnvRunner",
    "LocalInferenceClient",
    "ProtocolError",
    "RemoteError",
    "RemoteInferenceClient",
]
