"""The building blocks of a `training_step()`, at the import paths RLlib gave them
(`ray.rllib.execution.rollout_ops`, `ray.rllib.execution.train_ops`), and the asynchronous
pieces IMPALA and APPO share: `AsyncSampler` and `LearnerGroup`."""

from tunerl.execution.async_sampling import AsyncSampler
from tunerl.execution.learner_group import LearnerGroup
from tunerl.execution.rollout_ops import synchronous_parallel_sample
from tunerl.execution.train_ops import train_one_step

__all__ = ["AsyncSampler", "LearnerGroup", "synchronous_parallel_sample", "train_one_step"]
