"""Asynchronous sampling: every remote env runner always has one `sample()` request in flight.

IMPALA and APPO (Espeholt et al. 2018) let runners act with slightly stale weights instead
of waiting for the learner: while the driver trains on one batch, the runners already sample
the next. `AsyncSampler.sample()` returns at least a train batch of what is ready (waiting
only while nothing is) and at once asks each runner it took from for more;
`weights_updated()` broadcasts new weights, one `ray.put` and its reference to every runner,
every `broadcast_interval` learner updates. A broadcast queues behind the runner's request
in flight, so the runner's next sample uses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tunerl.core.env_runner_group import EnvRunnerFailure, EnvRunnerGroup
from tunerl.core.sample_batch import MultiAgentBatch, concat_samples


class AsyncSampler:
    """Keeps one `sample(num_env_steps_per_request)` request in flight on every remote
    runner of `group` (`config.env_steps_per_sample()`: a rollout fragment per sub-env)."""

    def __init__(
        self,
        group: EnvRunnerGroup,
        num_env_steps_per_request: int,
        broadcast_interval: int,
        request_after_update: bool = False,
    ):
        self.group = group
        self.num_env_steps_per_request = num_env_steps_per_request
        self.broadcast_interval = broadcast_interval
        # False: a runner gets its next request as soon as its sample is collected (the
        # learner trains in the collecting thread, so the runner samples meanwhile). True:
        # after the next learner update (or the next collect() if none came): with a learner
        # thread the runner then samples with weights one update old, not two.
        self.request_after_update = request_after_update
        self.wait_s = 0.0  # seconds blocked in collect(), no sample ready (cumulative)
        self._in_flight: dict[int, tuple[Any, Any]] = {}  # index -> (sample ref, metrics ref)
        self._weights_ref = None
        self._updates_since_broadcast = 0

    def _request(self, index: int, actor: Any) -> None:
        # An actor runs its calls in order: the metrics call returns those of this sample.
        self._in_flight[index] = (
            actor.sample.remote(self.num_env_steps_per_request),
            actor.get_metrics.remote(),
        )

    def _fill(self) -> None:
        """A request on every runner that has none (new, restarted or just collected)."""
        runners = self.group.remote_runners()
        for index in set(self._in_flight) - set(runners):
            del self._in_flight[index]  # dropped by fault tolerance
        for index, actor in runners.items():
            if index not in self._in_flight:
                self._request(index, actor)

    def sample(self, min_env_steps: int, timeout_s: float) -> MultiAgentBatch:
        """At least `min_env_steps` env steps, collected from the runners as their samples
        come in (`collect`), concatenated."""
        batches: list[MultiAgentBatch] = []
        while sum(len(batch) for batch in batches) < min_env_steps:
            batches += self.collect(timeout_s)
        return concat_samples(batches)

    def collect(self, timeout_s: float) -> list[MultiAgentBatch]:
        """The samples that are ready, waiting up to `timeout_s` only while none is; adds each
        runner's episode metrics to the group. Raises `EnvRunnerFailure` if nothing came."""
        import ray

        self._fill()
        by_ref = {refs[1]: index for index, refs in self._in_flight.items()}
        start = time.perf_counter()
        ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=timeout_s)
        self.wait_s += time.perf_counter() - start
        if not ready:
            raise EnvRunnerFailure(
                f"No env runner returned a sample within sample_timeout_s={timeout_s}."
            )
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        batches = []
        for ref in ready:
            index = by_ref[ref]
            sample_ref, metrics_ref = self._in_flight.pop(index)
            try:
                batch, metrics = ray.get([sample_ref, metrics_ref])
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
                self.group.handle_failure(index, error)
                restarted = self.group.remote_runners().get(index)
                if restarted is not None and self._weights_ref is not None:
                    restarted.set_weights.remote(self._weights_ref)
                continue
            self.group.add_metrics(metrics)
            batches.append(batch)
        if not self.request_after_update:
            self._fill()
        return batches

    def weights_updated(self, get_weights: Callable[[], dict]) -> bool:
        """Counts one learner update; broadcasts `get_weights()` (called only then) when
        `broadcast_interval` updates have passed. Returns whether it broadcast."""
        self._updates_since_broadcast += 1
        broadcast = self._updates_since_broadcast >= self.broadcast_interval
        if broadcast:
            self.broadcast(get_weights())
        if self.request_after_update:
            self._fill()
        return broadcast

    def broadcast(self, weights: dict) -> None:
        """One `ray.put`, its reference to every runner; nothing waits for them."""
        import ray

        self._weights_ref = ray.put(weights)
        for actor in self.group.remote_runners().values():
            actor.set_weights.remote(self._weights_ref)
        self._updates_since_broadcast = 0

    def forget_requests(self) -> None:
        """Drops the requests in flight (their samples and metrics are never read), e.g.
        after a checkpoint restore, whose runners start fresh episodes."""
        self._in_flight.clear()
