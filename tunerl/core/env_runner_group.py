"""EnvRunnerGroup: the algorithm's env runners, in its own process or as Ray actors.

With `num_env_runners=0` one local runner samples in the algorithm's process and Ray is never
started. With N > 0 the group starts N `EnvRunner` actors (inside a Tune trial they land in
the trial's placement group, which reserved a bundle for each), samples on all of them in
parallel, and broadcasts weights by putting them in the object store once.

Fault tolerance (the `.fault_tolerance()` and `sample_timeout_s` settings): a runner whose
actor died or whose env raised is logged with its error and restarted with the last weights
sent, or dropped, or its error is raised; what it owed is sampled again from the runners
that are up, round after round, until the steps or episodes asked for are in or the
restarts allowed (`max_num_env_runner_restarts`) are spent. A runner later than
`sample_timeout_s` is skipped with a warning and asked for nothing more until that sample is
done. Steps and episodes are counted only from the samples returned, so the counters match
what the learner trains on.

Resources: runner actors that Ray cannot place within `env_runner_start_timeout_s` (the
CPUs or GPUs they ask for are held by others, or the cluster has none) fail the build with
an `EnvRunnerStartError` naming what was asked, what is free and the fix, instead of waiting
forever.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable
from typing import Any

import ray

from tunerl.core.env_runner import EnvRunner
from tunerl.core.rl_module import MultiRLModuleSpec
from tunerl.core.sample_batch import MultiAgentBatch, concat_samples
from tunerl.env.registry import EnvCreator, EnvError

logger = logging.getLogger(__name__)

# What a call on a runner actor raises when the actor died or the call raised inside it.
_RAY_ERRORS = (ray.exceptions.RayActorError, ray.exceptions.RayTaskError)
# Logical CPUs per core of the local Ray that tunerl starts itself (outside Tune, when no Ray
# is running). Ray's CPU count is a reservation budget, not a measurement: outside Tune the
# algorithm's own process reserves nothing, its runner actors take turns with it (sample,
# then learn), and algorithms built side by side in one script mostly train one at a time
# while the idle ones' actors sleep. With one per core, the README's quick start (two
# algorithms of one training and one evaluation runner each) cannot place its fourth actor
# on a 2-core laptop and, before the start timeout existed, waited forever. Tune trials
# are not loosened by this: each reserves exactly what it starts (default_resource_request),
# and a Ray the user started is used as it is.
LOGICAL_CPUS_PER_CORE = 2
# Colour codes Ray puts around the task name in its error text.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def ensure_ray() -> None:
    """Starts a local Ray quietly if none is running (no dashboard, warnings only), with
    `LOGICAL_CPUS_PER_CORE` logical CPUs per core of this machine."""
    if ray.is_initialized():
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    num_cpus = LOGICAL_CPUS_PER_CORE * (cores or 1)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    logger.info(
        "Started a local Ray with %d logical CPUs on %d cores (%d per core, for lightweight "
        "env-runner actors); call ray.init() yourself first to choose otherwise.",
        num_cpus,
        cores,
        LOGICAL_CPUS_PER_CORE,
    )


# Seconds a recording runner (offline_data(output=...)) gets to write its last rows at stop.
RECORDING_STOP_TIMEOUT_S = 10.0


class EnvRunnerFailure(RuntimeError):
    """A remote env runner failed and fault tolerance did not allow going on without it."""


class EnvRunnerStartError(EnvRunnerFailure):
    """Runner actors did not start within `env_runner_start_timeout_s` (most often: the CPUs
    or GPUs they ask for are not free)."""


def describe_runner_error(error: BaseException) -> tuple[str, str]:
    """The runner's own error as (`"Type: message"`, its traceback text from the runner's
    process, or "" when there is none, e.g. for an actor that was killed)."""
    text = _ANSI_ESCAPE.sub("", str(error))
    cause = getattr(error, "cause", None)
    if isinstance(error, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
        summary = f"{type(cause).__name__}: {cause}"
    else:
        summary = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
    # Ray's text is its task line, two caret lines under it, then the remote frames: the
    # frames and the final "Type: message" line are the traceback the env raised with.
    start = text.find('  File "')
    traceback_text = "" if start < 0 else "Traceback (most recent call last):\n" + text[start:]
    return summary, traceback_text


@dataclasses.dataclass
class PendingSample:
    """A sample `EnvRunnerGroup.start_sample()` asked for; `finish_sample()` collects it."""

    num_timesteps: int | None
    num_episodes: int | None
    explore: bool | None
    requests: dict[int, tuple[Any, Any]]  # runner index -> (sample ref, metrics ref)
    batch: MultiAgentBatch | None = None  # a local runner's, sampled at once


class EnvRunnerGroup:
    """A local runner (when `num_env_runners == 0`) or `num_env_runners` remote ones."""

    def __init__(
        self,
        config: Any,
        module_spec: MultiRLModuleSpec,
        num_env_runners: int,
        seed_fn: Callable[[int], int],
        env_creator: EnvCreator | None = None,
        count_field: str = "num_env_runners",
        runner_class: type = EnvRunner,
    ):
        """`count_field` is the config field `num_env_runners` came from, as error messages
        name it (`evaluation_num_env_runners` for an evaluation group)."""
        self.config = config
        self._runner_class = runner_class
        self._count_field = count_field
        self._module_spec = module_spec
        self._env_creator = env_creator
        self._seed_fn = seed_fn
        self._weights_ref = None
        self._latest_weights: dict[str, Any] = {}
        self.num_restarts = 0
        self._restarts_per_index: dict[int, int] = {}
        self._metrics: dict[str, Any] = {}
        self.local_env_runner: EnvRunner | None = None
        self._remote: dict[int, Any] = {}
        # Sample requests not collected yet (in flight, or late), and calls whose result
        # nobody waited for (weights sent to a busy runner), by runner index.
        self._in_flight: dict[int, list[Any]] = {}
        self._unchecked: dict[int, list[Any]] = {}
        if num_env_runners == 0:
            self.local_env_runner = runner_class(
                config, module_spec, worker_index=0, seed=seed_fn(0), env_creator=env_creator
            )
        else:
            ensure_ray()
            for index in range(1, num_env_runners + 1):
                self._remote[index] = self._start_actor(index)
            try:
                failed = self._await_started(list(self._remote))
            except EnvRunnerStartError:
                self.stop()
                raise
            if failed:
                # A runner that cannot even be built is a bug to fix, not a failure to ride
                # out with restarts (as RLlib validates its runners after construction).
                self.stop()
                index, error = next(iter(failed.items()))
                summary, traceback_text = describe_runner_error(error)
                raise EnvRunnerFailure(
                    f"Env runner {index} failed while it was being built: {summary}\n"
                    f"{traceback_text}"
                ) from error

    def _start_actor(self, index: int) -> Any:
        options = {
            "num_cpus": self.config.num_cpus_per_env_runner,
            "num_gpus": self.config.num_gpus_per_env_runner,
        }
        threads = max(1, int(self.config.num_cpus_per_env_runner))
        actor = ray.remote(**options)(self._runner_class).remote(
            self.config, self._module_spec, index, self._seed_fn(index), self._env_creator, threads
        )
        if self._latest_weights:  # a restart: the weights the others have, of every module
            self._unchecked[index] = [actor.set_weights.remote(ray.put(self._latest_weights))]
        return actor

    def _await_started(self, indices: list[int]) -> dict[int, Exception]:
        """Waits up to `env_runner_start_timeout_s` for runners `indices` to be placed and
        built; returns the errors of those whose constructor raised. Raises
        `EnvRunnerStartError` if some are not up by then (Ray cannot place an actor whose
        resources are not free, and would otherwise wait for them forever)."""
        timeout_s = self.config.env_runner_start_timeout_s
        refs = {self._remote[index].ping.remote(): index for index in indices}
        ready, not_ready = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        if not_ready:
            raise EnvRunnerStartError(self._start_timeout_message(len(not_ready), len(refs)))
        errors = {}
        for ref in ready:
            try:
                ray.get(ref)
            except _RAY_ERRORS as error:
                errors[refs[ref]] = error
        return errors

    def _start_timeout_message(self, num_not_started: int, num_starting: int) -> str:
        config = self.config
        cpus, gpus = config.num_cpus_per_env_runner, config.num_gpus_per_env_runner
        asked = f"{cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus else "")
        free, total = ray.available_resources(), ray.cluster_resources()
        have = f"{free.get('CPU', 0):g} of {total.get('CPU', 0):g} CPUs"
        if gpus:
            have += f" and {free.get('GPU', 0):g} of {total.get('GPU', 0):g} GPUs"
        count = len(self._remote)
        head = (
            f"{num_not_started} of {num_starting} env runner actors did not start within "
            f"env_runner_start_timeout_s={config.env_runner_start_timeout_s:g}: this group asks "
            f"for {count} runner{'s' if count != 1 else ''} ({self._count_field}={count}) of "
            f"{asked} each (num_cpus_per_env_runner={cpus:g}, num_gpus_per_env_runner="
            f"{gpus:g}), and the Ray cluster has {have} free now."
        )
        # A placed actor holds its resources while it is built, one waiting for them holds
        # none: if another runner would fit in what is free, none is waiting for resources.
        if free.get("CPU", 0) >= cpus and free.get("GPU", 0) >= gpus:
            return (
                f"{head} That is enough for them: they are slow to build (their env, or the "
                "imports of a new worker process on a busy machine). Raise "
                ".env_runners(env_runner_start_timeout_s=...)."
            )
        return (
            f"{head} Free resources or ask for less: stop another algorithm that holds them "
            "(algo.stop()), use fewer runners, give each less "
            "(.env_runners(num_cpus_per_env_runner=0.5)), or start Ray yourself with more "
            "(ray.init(num_cpus=...)) before building."
        )

    # ------------------------------------------------------------------------- views
    def remote_workers(self) -> list[Any]:
        """The runner actors (RLlib's old name); empty when sampling locally."""
        return list(self._remote.values())

    def remote_runners(self) -> dict[int, Any]:
        """The runner actors by worker index (1..N); empty when sampling locally."""
        return dict(self._remote)

    @property
    def num_remote_env_runners(self) -> int:
        return len(self._remote)

    def num_healthy_remote_workers(self) -> int:
        return len(self._remote)

    # --------------------------------------------------------------------- sampling
    def sample(
        self,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool | None = None,
    ) -> MultiAgentBatch:
        """At least `num_timesteps` env steps (or exactly `num_episodes` episodes) from all
        runners together, gathered in parallel; their episode metrics are kept for
        `pop_metrics()`. With neither, each runner samples `rollout_fragment_length` steps
        per sub-env. Raises `EnvRunnerFailure` if no runner returned anything."""
        batch = self.finish_sample(self.start_sample(num_timesteps, num_episodes, explore))
        if len(batch) == 0:
            # Failures are restarted or raised in finish_sample: what is left is lateness.
            raise EnvRunnerFailure(
                "No env runner returned its sample within sample_timeout_s="
                f"{self.config.sample_timeout_s:g} (see the warnings logged above); raise "
                ".env_runners(sample_timeout_s=...) if the env is that slow."
            )
        return batch

    def start_sample(
        self,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool | None = None,
    ) -> PendingSample:
        """Sends the sample requests to the remote runners and returns at once; collect with
        `finish_sample()` (how evaluation runs in parallel to training). A local runner
        samples here, before returning."""
        if self.local_env_runner is not None:
            runner = self.local_env_runner
            if num_timesteps is None:
                batch = runner.sample(None, num_episodes, explore)
            else:
                # In sample() calls of at most one rollout fragment per sub-env, as remote
                # runners are asked: each call's end is a trajectory piece's end (GAE and
                # V-trace bootstrap there), so rollout_fragment_length means the same either way.
                pieces, left = [], num_timesteps
                while left > 0:
                    pieces.append(runner.sample(min(left, self._steps_per_call()), None, explore))
                    left -= self._steps_of(pieces[-1])
                batch = pieces[0] if len(pieces) == 1 else concat_samples(pieces)
            self.add_metrics(runner.get_metrics())
            return PendingSample(num_timesteps, num_episodes, explore, {}, batch)
        requests = self._request_round(num_timesteps, num_episodes, explore)
        return PendingSample(num_timesteps, num_episodes, explore, requests)

    def finish_sample(self, pending: PendingSample) -> MultiAgentBatch:
        """Collects what `start_sample()` asked for. A runner that fails is restarted (within
        the fault-tolerance settings) and what it owed is sampled again from the runners
        that are up, as often as it takes; one that is later than `sample_timeout_s` is
        skipped with a warning. The batch may hold fewer steps or episodes than asked (even
        none) when runners were skipped or dropped."""
        if pending.batch is not None:
            return pending.batch
        batches: list[MultiAgentBatch] = []
        steps_left, episodes_left = pending.num_timesteps, pending.num_episodes
        requests = pending.requests
        # Every round brings steps or episodes in, or restarts a runner (each has
        # max_num_env_runner_restarts, then handle_failure drops it or raises), or ends the
        # loop below: so this ends, and it does not give up while restarts are left.
        while True:
            restarts_before = self.num_restarts
            new, new_episodes = self._collect_round(requests)
            batches += new
            if steps_left is not None:
                steps_left -= sum(self._steps_of(batch) for batch in new)
                if steps_left <= 0:
                    break
            elif episodes_left is not None:
                episodes_left -= new_episodes
                if episodes_left <= 0:
                    break
            else:
                break  # one fragment per runner was asked for: no share to make up
            if not new and self.num_restarts == restarts_before:
                break  # nothing came back and nothing was restarted: asking again won't help
            requests = self._request_round(steps_left, episodes_left, pending.explore)
            if not requests:
                break
        return concat_samples(batches) if batches else MultiAgentBatch({}, 0)

    def _steps_of(self, batch: MultiAgentBatch) -> int:
        """The steps `batch` counts for: env steps, or agent steps (one per agent that acted)
        with `count_steps_by="agent_steps"`."""
        if self.config.count_steps_by == "agent_steps":
            return batch.agent_steps()
        return len(batch)

    def _steps_per_call(self) -> int:
        """The most env steps one runner is asked for in one `sample()` call: a rollout
        fragment on each of its sub-envs (`rollout_fragment_length`)."""
        return self.config.env_steps_per_sample()

    @staticmethod
    def _split(total: int, count: int) -> list[int]:
        """`total` episodes over `count` runners, as evenly as possible."""
        share, extra = divmod(total, count)
        return [share + (1 if i < extra else 0) for i in range(count)]

    def _request_round(self, num_timesteps, num_episodes, explore) -> dict[int, tuple]:
        """One `sample` and one `get_metrics` call on every runner that is not still busy
        with a late sample: {index: (sample ref, metrics ref)}."""
        indices = [index for index in list(self._remote) if self._is_free(index)]
        if not indices:
            return {}
        if num_timesteps is not None:
            share = min(math.ceil(num_timesteps / len(indices)), self._steps_per_call())
            steps = [share] * len(indices)
            episodes = [None] * len(indices)
        elif num_episodes is not None:
            steps, episodes = [None] * len(indices), self._split(num_episodes, len(indices))
        else:
            steps, episodes = [None] * len(indices), [None] * len(indices)
        requests = {}
        for index, num_steps, num_eps in zip(indices, steps, episodes):
            if num_eps == 0:
                continue
            actor = self._remote[index]
            # An actor runs its calls in order: the metrics are those of this sample.
            requests[index] = (
                actor.sample.remote(num_steps, num_eps, explore),
                actor.get_metrics.remote(),
            )
            self._in_flight[index] = list(requests[index])
        return requests

    def _collect_round(self, requests: dict[int, tuple]) -> tuple[list[MultiAgentBatch], int]:
        """Waits up to `sample_timeout_s` for the requests; returns the batches that came
        back and the episodes they finished."""
        if not requests:
            return [], 0
        refs = [ref for pair in requests.values() for ref in pair]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.config.sample_timeout_s)
        ready = set(ready)
        batches, num_episodes = [], 0
        for index, (sample_ref, metrics_ref) in requests.items():
            if index not in self._remote or self._in_flight.get(index) != [sample_ref, metrics_ref]:
                continue  # dropped or restarted since the request
            if sample_ref not in ready or metrics_ref not in ready:
                # It stays in flight: the runner gets no new request until it is done, and
                # its steps and episodes are not counted (nothing trains on them).
                logger.warning(
                    "Env runner %d did not return its sample within sample_timeout_s=%s; "
                    "skipping it until that sample is done.",
                    index,
                    self.config.sample_timeout_s,
                )
                continue
            del self._in_flight[index]
            try:
                batch, metrics = ray.get([sample_ref, metrics_ref])
            except _RAY_ERRORS as error:
                self.handle_failure(index, error)
                continue
            batches.append(batch)
            self.add_metrics(metrics)
            num_episodes += len(metrics["episode_returns"])
        return batches, num_episodes

    def _is_free(self, index: int) -> bool:
        """False while runner `index` is still busy with a sample that came back late. A late
        sample that is done now is dropped; calls nobody waited for (weights sent while the
        runner was busy) are checked, and a runner found dead is handled as a failure."""
        late = self._in_flight.get(index)
        if late:
            done, _ = ray.wait(late, num_returns=len(late), timeout=0)
            if len(done) < len(late):
                return False
            del self._in_flight[index]
            self._unchecked.setdefault(index, []).extend(late)
        unchecked = self._unchecked.pop(index, [])
        if unchecked:
            done, pending = ray.wait(unchecked, num_returns=len(unchecked), timeout=0)
            if pending:
                self._unchecked[index] = pending
            try:
                ray.get(done)
            except _RAY_ERRORS as error:
                self.handle_failure(index, error)
        return index in self._remote

    def handle_failure(self, index: int, error: Exception) -> None:
        """A dead actor, or an env that raised inside one: restart the runner if allowed
        (it gets the last weights sent), else drop it if allowed, else raise an
        `EnvRunnerFailure` that carries the env's own error and traceback. The error is
        logged in full either way. tunerl's own env contract errors (NaN, an observation
        outside its space) are bugs to fix, not failures to ride out: they are raised to the
        user as they are."""
        # A loop, not recursion: a restarted runner whose constructor raises is one more
        # failure, and the restarts allowed may be many.
        while True:
            if isinstance(error, ray.exceptions.RayTaskError):
                cause = error.as_instanceof_cause()
                if isinstance(cause, EnvError):
                    raise EnvError(str(error.cause)) from None
            config = self.config
            restarts = self._restarts_per_index.get(index, 0)
            summary, traceback_text = describe_runner_error(error)
            logger.error("Env runner %d failed: %s\n%s", index, summary, traceback_text)
            self._in_flight.pop(index, None)
            self._unchecked.pop(index, None)
            if config.restart_failed_env_runners and restarts < config.max_num_env_runner_restarts:
                ray.kill(self._remote[index], no_restart=True)
                self._remote[index] = self._start_actor(index)
                self._restarts_per_index[index] = restarts + 1
                self.num_restarts += 1
                logger.warning(
                    "Env runner %d restarted (restart %d of max_num_env_runner_restarts=%d "
                    "for it).",
                    index,
                    restarts + 1,
                    config.max_num_env_runner_restarts,
                )
                failed = self._await_started([index])
                if not failed:
                    return
                error = failed[index]
                continue
            if config.ignore_env_runner_failures and len(self._remote) > 1:
                ray.kill(self._remote.pop(index), no_restart=True)
                logger.warning(
                    "Env runner %d dropped (ignore_env_runner_failures=True); %d healthy remain.",
                    index,
                    len(self._remote),
                )
                return
            message = self._give_up_message(index, restarts, summary, traceback_text)
            raise EnvRunnerFailure(message) from error

    def _give_up_message(self, index: int, restarts: int, summary: str, traceback_text: str) -> str:
        config = self.config
        if not config.restart_failed_env_runners:
            why = "restart_failed_env_runners=False"
            fix = ".fault_tolerance(restart_failed_env_runners=True) to restart it"
        else:
            why = (
                f"it has used {restarts} of its max_num_env_runner_restarts="
                f"{config.max_num_env_runner_restarts} restarts"
            )
            fix = "a larger .fault_tolerance(max_num_env_runner_restarts=...)"
        if not config.ignore_env_runner_failures:
            fix += ", ignore_env_runner_failures=True to go on with the other runners"
        return (
            f"Env runner {index} failed and is not restarted ({why}; {self.num_restarts} "
            f"restarts in this group so far, ignore_env_runner_failures="
            f"{config.ignore_env_runner_failures}). Its error: {summary}. Fix the env, or set "
            f"{fix}. The runner's traceback:\n{traceback_text or '(none: its process died)'}"
        )

    def add_metrics(self, metrics: dict[str, Any]) -> None:
        """Adds a runner's `get_metrics()` to what `pop_metrics()` returns next: lists are
        extended, counts added, dicts of counts added per key (multi-agent runners' agent
        and module steps)."""
        for key, value in metrics.items():
            if isinstance(value, list):
                self._metrics.setdefault(key, []).extend(value)
            elif isinstance(value, dict):
                into = self._metrics.setdefault(key, {})
                for name, count in value.items():
                    into[name] = into.get(name, 0) + count
            else:
                self._metrics[key] = self._metrics.get(key, 0) + value

    def pop_metrics(self) -> dict[str, Any]:
        """Episodes finished and env steps sampled since the last call."""
        metrics = {"episode_returns": [], "episode_lengths": [], "num_env_steps": 0}
        metrics.update(self._metrics)
        self._metrics = {}
        return metrics

    # ---------------------------------------------------------------------- weights
    def sync_weights(self, weights: dict) -> None:
        """Sends `weights` ({module_id: weights}, all modules or some) to every runner: one
        `ray.put`, then the reference to each."""
        self._latest_weights.update(weights)
        if self.local_env_runner is not None:
            self.local_env_runner.set_weights(weights)
            return
        self._weights_ref = ray.put(weights)
        self._call_every_runner("set_weights", lambda index: (self._weights_ref,))

    def set_config(self, config: Any) -> None:
        """Gives every runner a new config whose changes need no new env."""
        self.config = config
        if self.local_env_runner is not None:
            self.local_env_runner.set_config(config)
            return
        self._call_every_runner("set_config", lambda index: (config,))

    def reset(self) -> None:
        """Every runner starts fresh episodes, seeded from `seed_fn` (after a restore)."""
        if self.local_env_runner is not None:
            self.local_env_runner.reset(self._seed_fn(0))
            return
        self._call_every_runner("reset", lambda index: (self._seed_fn(index),))

    def _call_every_runner(self, method: str, args: Callable[[int], tuple]) -> None:
        """Calls `method(*args(index))` on every remote runner. Waits for the idle ones and
        handles their failures; one still sampling (a late sample, or an evaluation running
        in parallel to training) runs the call after that sample, as an actor runs its calls
        in order, and nothing waits for it (its result is checked later)."""
        waiting = {}
        for index, actor in list(self._remote.items()):
            ref = getattr(actor, method).remote(*args(index))
            if index in self._in_flight:
                self._unchecked.setdefault(index, []).append(ref)
            else:
                waiting[index] = ref
        for index, ref in waiting.items():
            try:
                ray.get(ref)
            except _RAY_ERRORS as error:
                self.handle_failure(index, error)

    def foreach_env_runner(self, fn: Callable[[EnvRunner], Any]) -> list[Any]:
        """Calls `fn(runner)` on every runner and returns the results."""
        if self.local_env_runner is not None:
            return [fn(self.local_env_runner)]
        return ray.get(
            [a.__ray_call__.remote(lambda self_, f=fn: f(self_)) for a in self._remote.values()]
        )

    def stop(self) -> None:
        """Stops every actor this group started."""
        if self.local_env_runner is not None:
            self.local_env_runner.stop()
        if self._remote:
            if self.config.output is not None:
                # Recording runners write the rows they hold before they are killed; one
                # that does not answer in time loses them (fewer than a file's rows).
                refs = [actor.stop.remote() for actor in self._remote.values()]
                ray.wait(refs, num_returns=len(refs), timeout=RECORDING_STOP_TIMEOUT_S)
            for actor in self._remote.values():
                ray.kill(actor, no_restart=True)
            self._remote.clear()
            self._in_flight.clear()
            self._unchecked.clear()
