"""Learning for a hand-written `training_step()`: RLlib's `train_one_step`."""

from __future__ import annotations

from typing import Any

from tunerl.core import metrics as m
from tunerl.core.columns import DEFAULT_MODULE_ID
from tunerl.core.sample_batch import SampleBatch


def train_one_step(algo: Any, batch: SampleBatch) -> dict[str, Any]:
    """One `algo.learner.update(batch)` (its `num_epochs` passes of minibatch SGD), timed
    under `timers/learn`; counts the batch's rows in `num_env_steps_trained_lifetime` and
    returns the learner's statistics as `training_step()` returns them:
    `{"learners": {"default_policy": stats}}`.

    It does not touch an observation filter's statistics: an on-policy algorithm with one
    calls `algo.get_module().update_observation_filter(batch["obs"])` after it, as PPO does.
    """
    with algo._timer(m.LEARN_TIMER):
        stats = algo.learner.update(batch, algo._counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME])
    algo.count_trained_steps(len(batch))
    return {m.LEARNER_RESULTS: {DEFAULT_MODULE_ID: stats}}
