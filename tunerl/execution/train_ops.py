"""Learning for a hand-written `training_step()`: RLlib's `train_one_step`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch

if TYPE_CHECKING:
    from tunerl.core.algorithm import Algorithm


def train_one_step(algo: Algorithm, batch: MultiAgentBatch | SampleBatch) -> dict[str, Any]:
    """RLlib's name for `algo.train_on_batch(batch)`: one learner update on `batch`, timed,
    counted and merged into the observation filters; returns `{"learners": {module_id:
    stats}}`, as `training_step()` returns it."""
    return algo.train_on_batch(batch)
