"""Result keys (Tune flattens the nesting with `/`) and the episode statistics behind them.

Every key a tunerl result holds is a constant here, so a stopper, a scheduler or a plot
names it once: ``stop={metrics.EPISODE_RETURN_MEAN_KEY: 450}``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

# Top-level sections of a result.
ENV_RUNNER_RESULTS = "env_runners"
EVALUATION_RESULTS = "evaluation"
# Under EVALUATION_RESULTS: the off-policy estimates (tunerl.offline.offline_evaluation).
OFFLINE_EVAL_RUNNER_RESULTS = "offline_eval_runners"
LEARNER_RESULTS = "learners"
TIMERS = "timers"
FAULT_TOLERANCE = "fault_tolerance"

# Inside `env_runners` (and `evaluation/env_runners`).
EPISODE_RETURN_MEAN = "episode_return_mean"
EPISODE_RETURN_MAX = "episode_return_max"
EPISODE_RETURN_MIN = "episode_return_min"
EPISODE_LEN_MEAN = "episode_len_mean"
NUM_EPISODES = "num_episodes"
NUM_ENV_STEPS_SAMPLED = "num_env_steps_sampled"
# Multi-agent only: `agent_episode_returns_mean/<agent_id>` and
# `module_episode_returns_mean/<module_id>` (the agents a module served, summed per episode).
AGENT_EPISODE_RETURNS_MEAN = "agent_episode_returns_mean"
MODULE_EPISODE_RETURNS_MEAN = "module_episode_returns_mean"

# Top level counters.
NUM_ENV_STEPS_SAMPLED_LIFETIME = "num_env_steps_sampled_lifetime"
NUM_ENV_STEPS_TRAINED_LIFETIME = "num_env_steps_trained_lifetime"
NUM_EPISODES_LIFETIME = "num_episodes_lifetime"
# Multi-agent only: agent steps (one per agent that acted) in all, and per module
# (`num_module_steps_sampled_lifetime/<module_id>`).
NUM_AGENT_STEPS_SAMPLED_LIFETIME = "num_agent_steps_sampled_lifetime"
NUM_MODULE_STEPS_SAMPLED_LIFETIME = "num_module_steps_sampled_lifetime"
ENV_STEPS_PER_S = "env_steps_per_s"

# Inside `fault_tolerance`: remote training runners up now, and restarts since the algorithm
# was built (RLlib: num_healthy_workers, num_remote_worker_restarts).
NUM_HEALTHY_ENV_RUNNERS = "num_healthy_env_runners"
NUM_ENV_RUNNER_RESTARTS = "num_env_runner_restarts"

# Inside `learners/<module_id>`.
POLICY_LOSS = "policy_loss"
VF_LOSS = "vf_loss"
ENTROPY = "entropy"
MEAN_KL_LOSS = "mean_kl_loss"
CURR_KL_COEFF = "curr_kl_coeff"
VF_EXPLAINED_VAR = "vf_explained_var"
APPROX_KL = "approx_kl"
CLIP_FRACTION = "clip_fraction"
GRAD_NORM = "grad_norm"
CURR_LR = "curr_lr"
QF_LOSS = "qf_loss"
QF_MEAN = "qf_mean"
TD_ERROR_MEAN = "td_error_mean"
# Per-row TD errors a replay learner returns beside its stats; taken out for the priorities
# before the stats are reported.
TD_ERRORS = "td_errors"
CURR_EPSILON = "curr_epsilon"
ACTOR_LOSS = "actor_loss"
ALPHA_LOSS = "alpha_loss"
ALPHA_VALUE = "alpha_value"
NUM_UPDATES = "num_learner_updates"
# MARWIL: the running mean of squared advantages that scales them (RLlib's name).
MOVING_AVG_SQD_ADV_NORM = "moving_avg_sqd_adv_norm"
# CQL: its conservative penalty; IQL: its value (expectile) loss.
CQL_LOSS = "cql_loss"
VALUE_LOSS = "value_loss"

# Inside `timers`, in seconds.
SAMPLE_TIMER = "sample"
LEARN_TIMER = "learn"
SYNC_TIMER = "sync"
EVALUATION_TIMER = "evaluation"
OFFLINE_EVALUATION_TIMER = "offline_evaluation"
# IMPALA/APPO: the part of `sample` the driver spent blocked with no sample ready, and the
# driver's seconds handing batches to the learner thread and waiting for its updates (the
# thread's own seconds are LEARN_TIMER).
SAMPLE_WAIT_TIMER = "sample_wait"
LEARNER_WAIT_TIMER = "learner_wait"

# The flattened keys users pass to stoppers, schedulers and checkpoint ranking.
EPISODE_RETURN_MEAN_KEY = f"{ENV_RUNNER_RESULTS}/{EPISODE_RETURN_MEAN}"
EVALUATION_RETURN_MEAN_KEY = f"{EVALUATION_RESULTS}/{ENV_RUNNER_RESULTS}/{EPISODE_RETURN_MEAN}"


class EpisodeStats:
    """Returns and lengths of the last `window` finished episodes, and episodes counted since
    the last `reduce()`. RLlib smooths `episode_return_mean` over the last 100 episodes by
    default (`metrics_num_episodes_for_smoothing`); so does this."""

    def __init__(self, window: int = 100):
        self.returns: deque[float] = deque(maxlen=window)
        self.lengths: deque[int] = deque(maxlen=window)
        # Multi-agent episodes: {agent_id: return} and {module_id: return} of each.
        self.agent_returns: deque[dict[str, float]] = deque(maxlen=window)
        self.module_returns: deque[dict[str, float]] = deque(maxlen=window)
        self.num_new_episodes = 0

    def add(self, episode_return: float, episode_len: int) -> None:
        self.returns.append(float(episode_return))
        self.lengths.append(int(episode_len))
        self.num_new_episodes += 1

    def extend(
        self,
        returns: list[float],
        lengths: list[int],
        agent_returns: list[dict[str, float]] | None = None,
        module_returns: list[dict[str, float]] | None = None,
    ) -> None:
        for episode_return, episode_len in zip(returns, lengths):
            self.add(episode_return, episode_len)
        self.agent_returns.extend(agent_returns or [])
        self.module_returns.extend(module_returns or [])

    def reduce(self) -> dict[str, float]:
        """The smoothed statistics; resets the count of new episodes. NaN before any episode
        ends, as in RLlib, so a stopper never fires on a run that has not finished one."""
        if self.returns:
            returns = np.asarray(self.returns)
            stats = {
                EPISODE_RETURN_MEAN: float(returns.mean()),
                EPISODE_RETURN_MAX: float(returns.max()),
                EPISODE_RETURN_MIN: float(returns.min()),
                EPISODE_LEN_MEAN: float(np.mean(self.lengths)),
            }
        else:
            nan = float("nan")
            stats = dict.fromkeys(
                (EPISODE_RETURN_MEAN, EPISODE_RETURN_MAX, EPISODE_RETURN_MIN, EPISODE_LEN_MEAN),
                nan,
            )
        if self.agent_returns:
            stats[AGENT_EPISODE_RETURNS_MEAN] = _means(self.agent_returns)
            stats[MODULE_EPISODE_RETURNS_MEAN] = _means(self.module_returns)
        stats[NUM_EPISODES] = self.num_new_episodes
        self.num_new_episodes = 0
        return stats


def _means(episodes: deque[dict[str, float]]) -> dict[str, float]:
    """The mean per key over the episodes that have it (an agent that joined only some)."""
    values: dict[str, list[float]] = {}
    for episode in episodes:
        for key, value in episode.items():
            values.setdefault(key, []).append(value)
    return {key: float(np.mean(v)) for key, v in sorted(values.items())}
