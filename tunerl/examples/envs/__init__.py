"""Example envs (`ray.rllib.examples.envs`' place)."""
