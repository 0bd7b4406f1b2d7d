"""RLlib's `ray.rllib.policy` path: `PolicySpec`, how `.multi_agent(policies=...)` describes
one module."""

from tunerl.policy.policy import PolicySpec

__all__ = ["PolicySpec"]
