"""Learning for a hand-written `training_step()`: RLlib's `train_one_step`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunerl.core import metrics as m
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch

if TYPE_CHECKING:
    from tunerl.core.algorithm import Algorithm


def train_one_step(algo: Algorithm, batch: MultiAgentBatch | SampleBatch) -> dict[str, Any]:
    """One `algo.learner.update(batch)` (its postprocessing and SGD), timed under
    `timers/learn`; counts the batch's env steps in `num_env_steps_trained_lifetime`, merges
    its observations into the modules' observation filters and returns the learner's
    statistics as `training_step()` returns them: `{"learners": {module_id: stats}}`. A
    SampleBatch is the batch of `default_policy`."""
    batch = MultiAgentBatch.wrap_as_needed(batch)
    with algo.timer(m.LEARN_TIMER):
        results = algo.learner.update(batch, algo.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME])
        algo.learner.update_observation_filters(batch)
    algo.count_trained_steps(len(batch))
    return {m.LEARNER_RESULTS: results}
