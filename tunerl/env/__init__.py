"""Environments: the registry of custom envs and the vector envs runners step."""

from tunerl.env.registry import EnvContext, EnvError, make_vector_env, register_env

__all__ = ["EnvContext", "EnvError", "make_vector_env", "register_env"]
