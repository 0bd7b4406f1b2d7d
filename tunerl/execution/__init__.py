"""The building blocks of a hand-written `training_step()`, at the import paths RLlib gave
them (`ray.rllib.execution.rollout_ops`, `ray.rllib.execution.train_ops`)."""

from tunerl.execution.rollout_ops import synchronous_parallel_sample
from tunerl.execution.train_ops import train_one_step

__all__ = ["synchronous_parallel_sample", "train_one_step"]
