"""Learner-side batching in a background thread: the driver collects and concatenates the
next train batch while the learner trains on the previous one.

IMPALA and APPO (`learner_queue_size > 0`, remote runners) hand each train batch to a
`LearnerThread` instead of training on it in place. The thread trains the batches in the order
they came, one at a time, and after each update hands back its statistics and a copy of the
module's weights (the driver broadcasts those; it never reads the module while the thread may
be writing it). `submit()` blocks while `queue_size` batches already wait: sampling cannot run
ahead of learning without bound. Everything that reads or replaces the learner's state
(checkpoints, restores, a new trial's config) first calls `drain()`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunerl.core.sample_batch import SampleBatch


@dataclass
class LearnerOutput:
    """One finished update: its statistics, the rows trained, the seconds it took and the
    module's weights after it."""

    stats: dict[str, Any]
    num_rows: int
    learn_s: float
    weights: dict[str, Any] = field(repr=False)


class LearnerThreadError(RuntimeError):
    """The learner thread's update raised; the original error is the `__cause__`."""


_STOP = object()


class LearnerThread(threading.Thread):
    """Runs `update(batch, num_env_steps_sampled_lifetime) -> stats` on submitted batches,
    then `get_weights()`; results come back in order through `take()`."""

    def __init__(
        self,
        update: Callable[[SampleBatch, int], dict[str, Any]],
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
                batch, num_env_steps_sampled_lifetime = item
                start = time.perf_counter()
                try:
                    stats = self._update(batch, num_env_steps_sampled_lifetime)
                    weights = self._get_weights()
                except BaseException as error:  # handed to the driver, which raises it
                    self._outqueue.put(error)
                    continue
                learn_s = time.perf_counter() - start
                self._outqueue.put(LearnerOutput(stats, len(batch), learn_s, weights))
            finally:
                self._inqueue.task_done()

    def submit(self, batch: SampleBatch, num_env_steps_sampled_lifetime: int) -> None:
        """Queues `batch` for training; blocks while the queue is full."""
        if not self.is_alive():
            raise LearnerThreadError("The learner thread was stopped; no batch can be trained.")
        self.num_unfinished += 1
        self._inqueue.put((batch, num_env_steps_sampled_lifetime))

    def take(self, max_unfinished: int) -> list[LearnerOutput]:
        """The oldest updates, in order, waited for until no more than `max_unfinished`
        batches are still queued or training (an empty list if that holds already). A
        training step that hands over one batch thus takes back exactly one, handed over
        `max_unfinished` steps earlier. Raises `LearnerThreadError` (chained to the original)
        if an update raised."""
        outputs = []
        while self.num_unfinished > max_unfinished:
            item = self._outqueue.get()
            self.num_unfinished -= 1
            if isinstance(item, BaseException):
                raise LearnerThreadError(
                    f"The learner thread's update raised {type(item).__name__}: {item}"
                ) from item
            outputs.append(item)
        return outputs

    def drain(self) -> list[LearnerOutput]:
        """Waits until every submitted batch is trained; returns what `take` had not."""
        return self.take(max_unfinished=0)

    def stop(self) -> None:
        """Lets the queued batches finish, then ends the thread (their results are dropped)."""
        if self.is_alive():
            self._inqueue.put(_STOP)
            self.join()
