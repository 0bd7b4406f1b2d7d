"""Small, complete programs built on tunerl's public API (`ray.rllib.examples`' place)."""
