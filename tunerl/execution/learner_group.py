"""LearnerGroup: the algorithm's learner, updated in the driver's thread or, with
`queue_size > 0`, in a background `LearnerThread` (RLlib's name and calls).

`update(batch, timestep, async_update=True)` hands the batch to the thread and returns the
updates that finished meanwhile (waiting for the oldest while more than `queue_size` are
queued or training); without a thread, or with `async_update=False`, it trains on the batch
now and returns that update. Each update also trains the observation filters on its batch's
observations, after learning on them (so a batch is trained with the statistics it was
sampled with). The caller counts what each returned update trained and broadcasts its
weights; `pop_results()` gives the mean results of every update finished since the last
call, for the training step's report. `drain()` waits until the thread trained every batch
it was given: call it before reading or replacing the learner's state.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tunerl.core.learner import Learner
from tunerl.core.sample_batch import MultiAgentBatch
from tunerl.execution.learner_thread import LearnerThread, LearnerUpdate


class LearnerGroup:
    """One learner (`self.learner`); its updates run in a `LearnerThread` when
    `queue_size > 0`."""

    def __init__(self, learner: Learner, queue_size: int = 0):
        self.learner = learner
        self.queue_size = queue_size
        self._wait_s = 0.0  # seconds the driver blocked on the thread, since pop_wait_s()
        self._thread = (
            LearnerThread(self._update_now, learner.module.get_state, queue_size)
            if queue_size > 0
            else None
        )
        self._unreported: list[dict[str, dict[str, Any]]] = []

    @property
    def has_thread(self) -> bool:
        return self._thread is not None

    def update(
        self, batch: MultiAgentBatch, timestep: int, async_update: bool = False
    ) -> list[LearnerUpdate]:
        """The updates that finished, oldest first: with `async_update` and a thread, those
        the thread finished once `batch` is handed over (none while it is still filling
        its queue); else the update on `batch`, trained now. `timestep` is the clock the
        learning-rate schedules read."""
        if not (async_update and self._thread is not None):
            start = time.perf_counter()
            results = self._update_now(batch, timestep)
            learn_s = time.perf_counter() - start
            update = LearnerUpdate(results, len(batch), learn_s, self.learner.module.get_state)
            return self._finished([update])
        start = time.perf_counter()
        self._thread.submit(batch, timestep)
        updates = self._thread.take(max_unfinished=self.queue_size)
        self._wait_s += time.perf_counter() - start
        return self._finished(updates)

    def drain(self) -> list[LearnerUpdate]:
        """Waits until every batch handed over is trained; returns the updates that
        finished and `update` had not returned (none without a thread)."""
        if self._thread is None:
            return []
        start = time.perf_counter()
        updates = self._thread.take(max_unfinished=0)
        self._wait_s += time.perf_counter() - start
        return self._finished(updates)

    def pop_results(self) -> dict[str, dict[str, Any]]:
        """Each module's mean of each statistic over the updates finished since the last
        call (`{}` if none finished), and forgets them."""
        per_module: dict[str, list[dict[str, Any]]] = {}
        for results in self._unreported:
            for module_id, stats in results.items():
                per_module.setdefault(module_id, []).append(stats)
        self._unreported = []
        return {
            module_id: {key: float(np.mean([s[key] for s in stats])) for key in stats[0]}
            for module_id, stats in per_module.items()
        }

    def pop_wait_s(self) -> float:
        """Seconds the driver blocked on the learner thread since the last call (handing
        batches to a full queue, waiting for updates to finish)."""
        wait_s, self._wait_s = self._wait_s, 0.0
        return wait_s

    def stop(self) -> None:
        """Ends the learner thread once its queued batches are trained (their results are
        dropped); a no-op without one."""
        if self._thread is not None:
            self._thread.stop()

    def _update_now(self, batch: MultiAgentBatch, timestep: int) -> dict[str, dict[str, Any]]:
        results = self.learner.update(batch, timestep)
        self.learner.update_observation_filters(batch)
        return results

    def _finished(self, updates: list[LearnerUpdate]) -> list[LearnerUpdate]:
        self._unreported += [update.results for update in updates]
        return updates
