"""Wrappers that turn other libraries' envs into tunerl envs (`ray.rllib.env.wrappers`' place)."""

from tunerl.env.wrappers.pettingzoo_env import ParallelPettingZooEnv, PettingZooEnv

__all__ = ["ParallelPettingZooEnv", "PettingZooEnv"]
