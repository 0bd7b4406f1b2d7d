"""EpisodeStore: the steps external clients sent, episode by episode, until a sample takes them.

The server adds rows as clients step (one open episode per client env, or per client-side
episode id); the env runner's `sample()` takes every row buffered so far: whole finished
episodes and the pieces of open ones (a piece ends like a rollout fragment, and the next
piece of the same episode continues its `eps_id` and `t`). An episode whose client goes away
is dropped with the rows not yet taken, and counted as dropped, so only that episode is lost.
Thread-safe: the server thread adds, the runner's thread takes.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Hashable
from typing import Any

import numpy as np

from tunerl.core import columns

# Per-row columns a client step fills, in the order `add_row` takes them.
ROW_COLUMNS = (
    columns.OBS,
    columns.ACTIONS,
    columns.REWARDS,
    columns.TERMINATEDS,
    columns.TRUNCATEDS,
    columns.NEW_OBS,
    columns.ACTION_LOGP,
    columns.ACTION_DIST_INPUTS,
    columns.VF_PREDS,
)


@dataclasses.dataclass
class _Episode:
    eps_id: int
    t: int = 0  # steps added so far
    episode_return: float = 0.0
    rows: list[tuple] = dataclasses.field(default_factory=list)
    ended: bool = False


@dataclasses.dataclass
class Taken:
    """What one `take()` returned: the rows as columns, and the episodes it finished."""

    batch: dict[str, np.ndarray]
    episode_returns: list[float]
    episode_lengths: list[int]

    def __len__(self) -> int:
        return len(self.batch[columns.REWARDS]) if self.batch else 0


class EpisodeStore:
    """Open and finished episodes keyed by the client's (session, env or episode) key."""

    def __init__(self, first_eps_id: int = 0):
        self._lock = threading.Condition()
        self._open: dict[Hashable, _Episode] = {}
        self._ended: list[_Episode] = []
        self._next_eps_id = first_eps_id
        self.num_buffered_steps = 0
        # Exact counts, for the soak and the server's stats.
        self.counts = {
            "steps_added": 0,
            "steps_taken": 0,
            "steps_dropped": 0,
            "episodes_started": 0,
            "episodes_ended": 0,
            "episodes_taken": 0,
            "episodes_dropped": 0,
        }

    # --------------------------------------------------------------- the server's side
    def start(self, key: Hashable) -> None:
        """Opens a new episode under `key`; an episode still open there is dropped."""
        with self._lock:
            if key in self._open:
                self._drop_locked(key)
            self._open[key] = _Episode(self._next_eps_id)
            self._next_eps_id += 1
            self.counts["episodes_started"] += 1

    def is_open(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._open

    def add_rows(self, key: Hashable, rows: list[tuple], ended: bool) -> None:
        """Appends rows (values in `ROW_COLUMNS` order) to the episode open under `key`;
        `ended` closes it (its last row terminated or was truncated)."""
        with self._lock:
            episode = self._open[key]
            for row in rows:
                episode.rows.append(row)
                episode.episode_return += float(row[2])
            episode.t += len(rows)
            self.num_buffered_steps += len(rows)
            self.counts["steps_added"] += len(rows)
            if ended:
                episode.ended = True
                del self._open[key]
                self._ended.append(episode)
                self.counts["episodes_ended"] += 1
            self._lock.notify_all()

    def drop(self, keys: list[Hashable]) -> None:
        """Drops the open episodes under `keys` (their client left)."""
        with self._lock:
            for key in keys:
                if key in self._open:
                    self._drop_locked(key)

    def _drop_locked(self, key: Hashable) -> None:
        episode = self._open.pop(key)
        self.num_buffered_steps -= len(episode.rows)
        self.counts["steps_dropped"] += len(episode.rows)
        self.counts["episodes_dropped"] += 1

    # --------------------------------------------------------------- the runner's side
    def wait_for(self, num_steps: int, num_episodes: int | None, timeout_s: float) -> bool:
        """Waits until `num_steps` rows (or `num_episodes` finished episodes) are buffered;
        False if `timeout_s` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not self._enough(num_steps, num_episodes):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def _enough(self, num_steps: int, num_episodes: int | None) -> bool:
        if num_episodes is not None:
            return len(self._ended) >= num_episodes
        return self.num_buffered_steps >= num_steps

    def take(self, num_episodes: int | None = None) -> Taken:
        """Every buffered row (finished episodes, then pieces of the open ones), or with
        `num_episodes` only that many finished episodes (the oldest)."""
        with self._lock:
            if num_episodes is not None:
                ended, self._ended = self._ended[:num_episodes], self._ended[num_episodes:]
                pieces = []
            else:
                ended, self._ended = self._ended, []
                pieces = [episode for episode in self._open.values() if episode.rows]
            parts = []
            for episode in ended + pieces:
                first_t = episode.t - len(episode.rows)
                parts.append((episode.eps_id, first_t, episode.rows))
                episode.rows = []
            num_rows = sum(len(rows) for _, _, rows in parts)
            self.num_buffered_steps -= num_rows
            self.counts["steps_taken"] += num_rows
            self.counts["episodes_taken"] += len(ended)
            returns = [episode.episode_return for episode in ended]
            lengths = [episode.t for episode in ended]
        return Taken(_to_columns(parts), returns, lengths)

    def snapshot_counts(self) -> dict[str, int]:
        with self._lock:
            return {
                **self.counts,
                "steps_buffered": self.num_buffered_steps,
                "episodes_open": len(self._open),
            }


def _to_columns(parts: list[tuple[int, int, list[tuple]]]) -> dict[str, np.ndarray]:
    rows = [row for _, _, episode_rows in parts for row in episode_rows]
    if not rows:
        return {}
    values = list(zip(*rows))
    batch: dict[str, Any] = {}
    for name, column in zip(ROW_COLUMNS, values):
        batch[name] = np.stack(column) if isinstance(column[0], np.ndarray) else np.array(column)
    batch[columns.REWARDS] = batch[columns.REWARDS].astype(np.float32)
    batch[columns.TERMINATEDS] = batch[columns.TERMINATEDS].astype(bool)
    batch[columns.TRUNCATEDS] = batch[columns.TRUNCATEDS].astype(bool)
    batch[columns.ACTION_LOGP] = batch[columns.ACTION_LOGP].astype(np.float32)
    batch[columns.VF_PREDS] = batch[columns.VF_PREDS].astype(np.float32)
    batch[columns.EPS_ID] = np.concatenate(
        [np.full(len(episode_rows), eps_id, np.int64) for eps_id, _, episode_rows in parts]
    )
    batch[columns.T] = np.concatenate(
        [np.arange(t0, t0 + len(episode_rows), dtype=np.int64) for _, t0, episode_rows in parts]
    )
    return batch
