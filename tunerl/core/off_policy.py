"""What DQN and SAC share: `ReplayState`, the object that owns their experience.

Per module, a replay buffer and an n-step collector (the rows whose n steps are not all
sampled yet); for the algorithm, the fraction of an update owed. The algorithm holds it
(`self.replay`) and calls its methods in `training_step`:

    batch = self.sample_from_runners(...)            # 1. sample
    self.replay.add(batch)                           #    as n-step transitions
    for _ in range(self.replay.updates_owed(...)):   # 2. learn
        replayed, slots = self.replay.sample(batch_size)
        results = self.learner.update(replayed)
        self.replay.update_priorities(slots, results)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunerl.core import checkpoint_io
from tunerl.core import metrics as m
from tunerl.core.replay_buffers import (
    BATCH_INDEXES,
    NStepCollector,
    ReplayBuffer,
    make_replay_buffer,
)
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch

REPLAY_BUFFER_DIR = "replay_buffer"
# tunerl 0.1 wrote the one module's buffer as this file.
LEGACY_REPLAY_BUFFER_FILE = "replay_buffer.npz"


def updates_due(
    credit: float, num_sampled: int, training_intensity: float, batch_size: int
) -> tuple[int, float]:
    """`training_intensity` replayed transitions per sampled step, in whole updates of
    `batch_size`; the fraction left over is carried to the next call. Returns
    (updates, new credit)."""
    credit += num_sampled * training_intensity / batch_size
    updates = int(credit)
    return updates, credit - updates


def buffer_file(module_id: str) -> str:
    """Where a module's replay buffer goes in a checkpoint."""
    return f"{REPLAY_BUFFER_DIR}/{module_id}.npz"


class ReplayState:
    """Replay buffers and n-step collectors keyed by module id, and the update credit.
    `draw_seed` gives each new buffer its seed (the algorithm's checkpointed stream)."""

    def __init__(self, config: Any, module_ids: Sequence[str], draw_seed: Callable[[], int]):
        self.config = config
        self.module_ids = list(module_ids)
        self.buffers: dict[str, ReplayBuffer] = {}
        self.collectors: dict[str, NStepCollector] = {}
        self.update_credit = 0.0
        self.restore({}, draw_seed)

    def add(self, batch: MultiAgentBatch) -> None:
        """Adds each module's sampled rows as n-step transitions (rows whose n steps are not
        all sampled yet wait in the collector)."""
        for module_id, module_batch in batch.policy_batches.items():
            self.buffers[module_id].add(self.collectors[module_id].add(module_batch))

    def updates_owed(self, num_sampled: int, num_sampled_lifetime: int) -> int:
        """Whole updates owed after sampling `num_sampled` steps: `training_intensity`
        replayed rows per sampled step, in updates of `train_batch_size_per_learner`; none
        before `num_steps_sampled_before_learning_starts`, nor while a buffer is empty (with
        learning from step 0 the first steps wait in the n-step collector)."""
        config = self.config
        if num_sampled_lifetime < config.num_steps_sampled_before_learning_starts or not all(
            len(buffer) for buffer in self.buffers.values()
        ):
            return 0
        updates, self.update_credit = updates_due(
            self.update_credit,
            num_sampled,
            config.training_intensity,
            config.train_batch_size_per_learner,
        )
        return updates

    def sample(
        self, batch_size: int, **options: Any
    ) -> tuple[MultiAgentBatch, dict[str, np.ndarray]]:
        """`batch_size` replayed rows of every module (`options`: prioritized replay's
        `beta`), and the buffer slots they came from, for `update_priorities`."""
        batches: dict[str, SampleBatch] = {}
        slots: dict[str, np.ndarray] = {}
        for module_id, buffer in self.buffers.items():
            replayed = buffer.sample(batch_size, **options)
            slots[module_id] = replayed.pop(BATCH_INDEXES)
            batches[module_id] = replayed
        return MultiAgentBatch(batches, batch_size), slots

    def update_priorities(
        self, slots: dict[str, np.ndarray], results: dict[str, dict[str, Any]]
    ) -> None:
        """Feeds each module's TD errors (taken out of its learner stats) back as the
        priorities of the rows it replayed (a no-op for uniform replay)."""
        for module_id, stats in results.items():
            td_errors = stats.pop(m.TD_ERRORS, None)
            if td_errors is not None:
                self.buffers[module_id].update_priorities(slots[module_id], td_errors)

    # ----------------------------------------------------------------- checkpoints
    def save(self, directory: Path) -> None:
        """Writes every module's buffer into the checkpoint, if `store_buffer_in_checkpoints`."""
        if self.config.store_buffer_in_checkpoints:
            (directory / REPLAY_BUFFER_DIR).mkdir(parents=True, exist_ok=True)
            for module_id, buffer in self.buffers.items():
                buffer.save(directory / buffer_file(module_id))

    def read(self, reader: checkpoint_io.CheckpointReader) -> dict[str, ReplayBuffer]:
        """New buffers holding the ones a checkpoint saved (none if it saved none), checked
        before any live buffer is replaced."""
        files = {module_id: buffer_file(module_id) for module_id in self.module_ids}
        if len(self.module_ids) == 1 and reader.has(LEGACY_REPLAY_BUFFER_FILE):
            files = {self.module_ids[0]: LEGACY_REPLAY_BUFFER_FILE}
        buffers = {}
        for module_id, name in files.items():
            if not reader.has(name):
                continue
            buffer = make_replay_buffer(self.config.replay_buffer_config, seed=0)  # state has RNG
            try:
                buffer.set_state(reader.arrays(name))
            except (KeyError, ValueError, TypeError, IndexError) as error:
                raise checkpoint_io.CheckpointError(
                    f"{reader.path(name)} is not a replay buffer this algorithm can use "
                    f"({type(error).__name__}: {error})."
                ) from None
            buffers[module_id] = buffer
        return buffers

    def restore(self, buffers: dict[str, ReplayBuffer], draw_seed: Callable[[], int]) -> None:
        """Takes the buffers `read` returned; a module without one gets a new empty buffer,
        seeded from `draw_seed` (after a restore: the restored stream, so a restore into a
        live algorithm, as PBT does, continues exactly as `from_checkpoint` does instead of
        replaying the live run's experience). The n-step collectors start empty: the runners
        start fresh episodes."""
        config = self.config
        for module_id in self.module_ids:
            buffer = buffers.get(module_id)
            if buffer is None:
                buffer = make_replay_buffer(config.replay_buffer_config, seed=draw_seed())
            self.buffers[module_id] = buffer
            self.collectors[module_id] = NStepCollector(config.n_step, config.gamma)
