"""Learner-side batching in a background thread: the driver collects and concatenates the
next train batch while the learner trains on the previous one.

A `LearnerGroup` with `queue_size > 0` (IMPALA and APPO with remote runners) hands each
train batch to a `LearnerThread` instead of training on it in place. The thread trains the
batches in the order they came, one at a time, and after each update hands back its results
and a copy of the modules' weights (the driver broadcasts those; it never reads the modules
while the thread may be writing them). `submit()` blocks while `queue_size` batches already
wait: sampling cannot run ahead of learning without bound. Everything that reads or replaces
the learner's state first waits for the thread (`take(max_unfinished=0)`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunerl.core.sample_batch import MultiAgentBatch


@dataclass
class LearnerUpdate:
    """One finished learner update: its results (`{module_id: stats}`), the env steps
    (rows) it trained on, the seconds it took, and `get_weights()`, the modules' weights
    right after it (`{module_id: weights}`, as the runners take them)."""

    results: dict[str, dict[str, Any]]
    num_env_steps: int
    learn_s: float
    get_weights: Callable[[], dict[str, Any]] = field(repr=False)


class LearnerThreadError(RuntimeError):
    """The learner thread's update raised; the original error is the `__cause__`."""


_STOP = object()


class LearnerThread(threading.Thread):
    """Runs `update(batch, timestep) -> {module_id: stats}` on submitted batches, then
    `get_weights()`; the finished updates come back in order through `take()`."""

    def __init__(
        self,
        update: Callable[[MultiAgentBatch, int], dict[str, dict[str, Any]]],
        get_weights: Callable[[], dict[str, Any]],
        queue_size: int,
    ):
        super().__init__(name="tunerl-learner", daemon=True)
        self._update = update
        self._get_weights = get_weights
        self._inqueue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._outqueue: queue.Queue = queue.Queue()
        self.num_unfinished = 0  # submitted and not yet taken back by take()
        self.start()

    def run(self) -> None:
        while True:
            item = self._inqueue.get()
            try:
                if item is _STOP:
                    return
                batch, timestep = item
                start = time.perf_counter()
                try:
                    results = self._update(batch, timestep)
                    weights = self._get_weights()
                except BaseException as error:  # handed to the driver, which raises it
                    self._outqueue.put(error)
                    continue
                learn_s = time.perf_counter() - start
                snapshot = _Snapshot(weights)
                self._outqueue.put(LearnerUpdate(results, len(batch), learn_s, snapshot.get))
            finally:
                self._inqueue.task_done()

    def submit(self, batch: MultiAgentBatch, timestep: int) -> None:
        """Queues `batch` for training at clock `timestep`; blocks while the queue is full."""
        if not self.is_alive():
            raise LearnerThreadError("The learner thread was stopped; no batch can be trained.")
        self.num_unfinished += 1
        self._inqueue.put((batch, timestep))

    def take(self, max_unfinished: int) -> list[LearnerUpdate]:
        """The oldest updates, in order, waited for until no more than `max_unfinished`
        batches are still queued or training (an empty list if that holds already). A
        training step that hands over one batch thus takes back exactly one, handed over
        `max_unfinished` steps earlier. Raises `LearnerThreadError` (chained to the original)
        if an update raised."""
        updates = []
        while self.num_unfinished > max_unfinished:
            item = self._outqueue.get()
            self.num_unfinished -= 1
            if isinstance(item, BaseException):
                raise LearnerThreadError(
                    f"The learner thread's update raised {type(item).__name__}: {item}"
                ) from item
            updates.append(item)
        return updates

    def stop(self) -> None:
        """Lets the queued batches finish, then ends the thread (their results are dropped)."""
        if self.is_alive():
            self._inqueue.put(_STOP)
            self.join()


@dataclass(frozen=True)
class _Snapshot:
    """Weights copied in the thread after one update, handed out as they were then."""

    weights: dict[str, Any]

    def get(self) -> dict[str, Any]:
        return self.weights
