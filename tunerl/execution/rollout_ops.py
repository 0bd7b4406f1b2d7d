"""Sampling for a hand-written `training_step()`: RLlib's `synchronous_parallel_sample`."""

from __future__ import annotations

from tunerl.core.env_runner_group import EnvRunnerGroup
from tunerl.core.sample_batch import MultiAgentBatch


def synchronous_parallel_sample(
    *,
    worker_set: EnvRunnerGroup | None = None,
    env_runner_group: EnvRunnerGroup | None = None,
    max_env_steps: int | None = None,
    max_episodes: int | None = None,
    explore: bool | None = None,
) -> MultiAgentBatch:
    """Samples on every runner of the group in parallel and returns one batch.

    With neither limit, every runner samples once, `rollout_fragment_length` steps per
    sub-env, as RLlib does; `max_env_steps` asks for at least that many env steps from all
    runners together, `max_episodes` for exactly that many complete episodes. Goes through
    `EnvRunnerGroup.sample`, so a failed runner is restarted and its share sampled again,
    and the episodes and env steps are counted in the algorithm's results.
    `worker_set` is RLlib's old name of `env_runner_group`.
    """
    group = env_runner_group if env_runner_group is not None else worker_set
    if group is None:
        raise TypeError("synchronous_parallel_sample() needs env_runner_group= (or worker_set=).")
    if max_env_steps is not None and max_episodes is not None:
        raise ValueError(
            f"Give max_env_steps ({max_env_steps}) or max_episodes ({max_episodes}), not both."
        )
    if max_env_steps is None and max_episodes is None:
        max_env_steps = group.config.env_steps_per_round(group.num_remote_env_runners)
    return group.sample(num_timesteps=max_env_steps, num_episodes=max_episodes, explore=explore)
