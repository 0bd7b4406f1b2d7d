"""What DQN and SAC share: how many replayed updates an iteration owes, and the replay
buffer in checkpoints. Functions, not a base class (STYLE.md)."""

from __future__ import annotations

from pathlib import Path

from tunerl.core.replay_buffers import ReplayBuffer

REPLAY_BUFFER_FILE = "replay_buffer.npz"


def updates_due(
    credit: float, num_sampled: int, training_intensity: float, batch_size: int
) -> tuple[int, float]:
    """`training_intensity` replayed transitions per sampled step, in whole updates of
    `batch_size`; the fraction left over is carried to the next call. Returns
    (updates, new credit)."""
    credit += num_sampled * training_intensity / batch_size
    updates = int(credit)
    return updates, credit - updates


def save_buffer(buffer: ReplayBuffer, directory: Path, enabled: bool) -> None:
    if enabled:
        buffer.save(directory / REPLAY_BUFFER_FILE)


def load_buffer(buffer: ReplayBuffer, directory: Path) -> None:
    path = directory / REPLAY_BUFFER_FILE
    if path.is_file():
        buffer.load(path)
