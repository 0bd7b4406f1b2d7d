"""What DQN and SAC share: how many replayed updates an iteration owes, and the replay
buffer in checkpoints. Functions, not a base class (STYLE.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunerl.core import checkpoint_io
from tunerl.core import metrics as m
from tunerl.core.replay_buffers import (
    BATCH_INDEXES,
    NStepCollector,
    ReplayBuffer,
    make_replay_buffer,
)
from tunerl.core.sample_batch import SampleBatch

REPLAY_BUFFER_FILE = "replay_buffer.npz"
N_STEP_HELP = (
    "Steps summed in each return before bootstrapping (fewer at an episode's end). A step "
    "goes into the replay buffer once its next n_step - 1 steps are sampled."
)


def build_replay_state(algo: Any) -> None:
    """What DQN and SAC keep between iterations: the replay buffer, the n-step collector and
    the fraction of an update owed (`updates_owed`)."""
    config = algo.config
    algo.replay_buffer = make_replay_buffer(config.replay_buffer_config, seed=algo._draw_seed())
    algo.n_step_collector = NStepCollector(config.n_step, config.gamma)
    algo._update_credit = 0.0


def updates_due(
    credit: float, num_sampled: int, training_intensity: float, batch_size: int
) -> tuple[int, float]:
    """`training_intensity` replayed transitions per sampled step, in whole updates of
    `batch_size`; the fraction left over is carried to the next call. Returns
    (updates, new credit)."""
    credit += num_sampled * training_intensity / batch_size
    updates = int(credit)
    return updates, credit - updates


def updates_owed(algo: Any, num_sampled: int) -> int:
    """Whole updates `algo` owes after sampling `num_sampled` steps (none before
    `num_steps_sampled_before_learning_starts`, nor while the replay buffer is empty: with
    learning starting at 0, the first steps wait in the n-step collector); keeps the fraction
    in `algo._update_credit`."""
    config = algo.config
    sampled = algo._counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    if sampled < config.num_steps_sampled_before_learning_starts or not len(algo.replay_buffer):
        return 0
    updates, algo._update_credit = updates_due(
        algo._update_credit,
        num_sampled,
        config.training_intensity,
        config.train_batch_size_per_learner,
    )
    return updates


def save_buffer(buffer: ReplayBuffer, directory: Path, enabled: bool) -> None:
    if enabled:
        buffer.save(directory / REPLAY_BUFFER_FILE)


def read_buffer(
    reader: checkpoint_io.CheckpointReader, replay_buffer_config: dict[str, Any]
) -> ReplayBuffer | None:
    """A new buffer holding the replay buffer a checkpoint saved (None if it saved none),
    checked before the algorithm's own buffer is replaced by it."""
    if not reader.has(REPLAY_BUFFER_FILE):
        return None
    arrays = reader.arrays(REPLAY_BUFFER_FILE)
    buffer = make_replay_buffer(replay_buffer_config, seed=0)  # set_state brings its RNG
    try:
        buffer.set_state(arrays)
    except (KeyError, ValueError, TypeError, IndexError) as error:
        raise checkpoint_io.CheckpointError(
            f"{reader.path(REPLAY_BUFFER_FILE)} is not a replay buffer this algorithm can use "
            f"({type(error).__name__}: {error})."
        ) from None
    return buffer


def restore_replay_state(algo: Any, buffer: ReplayBuffer | None) -> None:
    """After a restore: the checkpoint's replay buffer, or a new empty one when it stored
    none (`store_buffer_in_checkpoints=False`), seeded from the restored RNG stream, so a
    restore into a live algorithm (PBT, a Tune trial restore) continues exactly as
    `from_checkpoint` does instead of replaying the live run's own experience. The n-step
    collector starts empty: the runners start fresh episodes."""
    algo.replay_buffer = (
        buffer
        if buffer is not None
        else make_replay_buffer(algo.config.replay_buffer_config, seed=algo._draw_seed())
    )
    algo.n_step_collector = NStepCollector(algo.config.n_step, algo.config.gamma)


def sample_into_buffer(algo: Any) -> SampleBatch:
    """Samples `rollout_fragment_length` steps per sub-env on every runner and adds them to
    `algo.replay_buffer` as n-step transitions (through `algo.n_step_collector`, which holds
    the rows whose n steps are not all sampled yet); returns the one-step batch."""
    config = algo.config
    steps = config.rollout_fragment_length * config.num_envs_per_env_runner
    batch = algo.sample_from_runners(steps * max(1, config.num_env_runners))
    algo.replay_buffer.add(algo.n_step_collector.add(batch))
    return batch


def replay_update(algo: Any, num_env_steps_sampled: int, **sample_options: Any) -> dict:
    """One learner update on a replayed batch; feeds the TD errors back as priorities and
    counts the trained steps."""
    replay = algo.replay_buffer.sample(algo.config.train_batch_size_per_learner, **sample_options)
    stats = algo.learner.update(replay, num_env_steps_sampled)
    algo.replay_buffer.update_priorities(
        replay[BATCH_INDEXES], algo.learner.last_td_errors.cpu().numpy()
    )
    algo.count_trained_steps(len(replay))
    return stats
