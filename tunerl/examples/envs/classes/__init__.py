"""Example env classes (`ray.rllib.examples.envs.classes`' place)."""
