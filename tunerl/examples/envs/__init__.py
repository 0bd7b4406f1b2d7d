"""Example envs and clients (`ray.rllib.examples.envs`' place)."""
