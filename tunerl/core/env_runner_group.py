"""EnvRunnerGroup: the algorithm's env runners, in its own process or as Ray actors.

With `num_env_runners=0` one local runner samples in the algorithm's process and Ray is never
started. With N > 0 the group starts N `EnvRunner` actors (inside a Tune trial they land in
the trial's placement group, which reserved a bundle for each), samples on all of them in
parallel, and broadcasts weights by putting them in the object store once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from tunerl.core import columns
from tunerl.core.env_runner import EnvRunner
from tunerl.core.rl_module import RLModuleSpec
from tunerl.core.sample_batch import SampleBatch, concat_samples
from tunerl.env.registry import EnvCreator, EnvError

logger = logging.getLogger(__name__)

# Rounds of sampling per call: the first, and re-sampling what failed runners owed.
_MAX_SAMPLE_ROUNDS = 3


def ensure_ray() -> None:
    """Starts a local Ray quietly if none is running (no dashboard, warnings only)."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)


class EnvRunnerFailure(RuntimeError):
    """A remote env runner failed and fault tolerance did not allow going on without it."""


class EnvRunnerGroup:
    """A local runner (when `num_env_runners == 0`) or `num_env_runners` remote ones."""

    def __init__(
        self,
        config: Any,
        module_spec: RLModuleSpec,
        num_env_runners: int,
        seed_fn: Callable[[int], int],
        env_creator: EnvCreator | None = None,
    ):
        self.config = config
        self._module_spec = module_spec
        self._env_creator = env_creator
        self._seed_fn = seed_fn
        self._weights_ref = None
        self.num_restarts = 0
        self._restarts_per_index: dict[int, int] = {}
        self._episode_returns: list[float] = []
        self._episode_lengths: list[int] = []
        self._num_env_steps = 0
        self.local_env_runner: EnvRunner | None = None
        self._remote: dict[int, Any] = {}
        if num_env_runners == 0:
            self.local_env_runner = EnvRunner(
                config, module_spec, worker_index=0, seed=seed_fn(0), env_creator=env_creator
            )
        else:
            ensure_ray()
            for index in range(1, num_env_runners + 1):
                self._remote[index] = self._start_actor(index)

    def _start_actor(self, index: int) -> Any:
        import ray

        options = {
            "num_cpus": self.config.num_cpus_per_env_runner,
            "num_gpus": self.config.num_gpus_per_env_runner,
        }
        threads = max(1, int(self.config.num_cpus_per_env_runner))
        actor = ray.remote(**options)(EnvRunner).remote(
            self.config, self._module_spec, index, self._seed_fn(index), self._env_creator, threads
        )
        if self._weights_ref is not None:
            actor.set_weights.remote(self._weights_ref)
        return actor

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
    ) -> SampleBatch:
        """At least `num_timesteps` env steps (or exactly `num_episodes` episodes) from all
        runners together, gathered in parallel; their episode metrics are kept for
        `pop_metrics()`."""
        if self.local_env_runner is not None:
            batch = self.local_env_runner.sample(num_timesteps, num_episodes, explore)
            self.add_metrics(self.local_env_runner.get_metrics())
            return batch
        return self._sample_remote(num_timesteps, num_episodes, explore)

    @staticmethod
    def _split(total: int, count: int) -> list[int]:
        """`total` episodes over `count` runners, as evenly as possible."""
        share, extra = divmod(total, count)
        return [share + (1 if i < extra else 0) for i in range(count)]

    def _sample_remote(self, num_timesteps, num_episodes, explore) -> SampleBatch:
        """Samples on every runner in parallel. A runner that fails is restarted (within
        the fault-tolerance settings) and what it owed is sampled again from the runners
        that are up, so the batch still has the steps or episodes asked for."""
        batches: list[SampleBatch] = []
        steps_left, episodes_left = num_timesteps, num_episodes
        for _ in range(_MAX_SAMPLE_ROUNDS):
            restarts_before = self.num_restarts
            new = self._sample_round(steps_left, episodes_left, explore)
            if not new and self.num_restarts == restarts_before:
                break  # nothing came back and nothing was restarted: asking again won't help
            batches += new
            if steps_left is not None:
                steps_left -= sum(len(batch) for batch in new)
                if steps_left <= 0:
                    break
            else:
                episodes_left -= sum(_num_episodes(batch) for batch in new)
                if episodes_left <= 0:
                    break
        batch = concat_samples(batches)
        if len(batch) == 0:
            raise EnvRunnerFailure(
                "No env runner returned a sample (all failed or timed out after "
                f"sample_timeout_s={self.config.sample_timeout_s}); see the errors logged above."
            )
        return batch

    def _sample_round(self, num_timesteps, num_episodes, explore) -> list[SampleBatch]:
        import ray

        indices = list(self._remote)
        if num_timesteps is not None:
            per_runner = [math.ceil(num_timesteps / len(indices))] * len(indices)
            episodes = [None] * len(indices)
        else:
            per_runner = [None] * len(indices)
            episodes = self._split(num_episodes, len(indices))
        pending = {}
        for index, steps, eps in zip(indices, per_runner, episodes):
            if eps == 0:
                continue
            actor = self._remote[index]
            pending[index] = (actor.sample.remote(steps, eps, explore), actor.get_metrics.remote())
        refs = [ref for pair in pending.values() for ref in pair]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.config.sample_timeout_s)
        ready = set(ready)
        batches = []
        for index, (sample_ref, metrics_ref) in pending.items():
            if sample_ref not in ready or metrics_ref not in ready:
                logger.warning(
                    "Env runner %d did not return its sample within sample_timeout_s=%s; "
                    "skipping it this iteration.",
                    index,
                    self.config.sample_timeout_s,
                )
                continue
            try:
                batch, metrics = ray.get([sample_ref, metrics_ref])
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
                self.handle_failure(index, error)
                continue
            batches.append(batch)
            self.add_metrics(metrics)
        return batches

    def handle_failure(self, index: int, error: Exception) -> None:
        """A dead actor, or an env that raised inside one: restart the runner if allowed,
        else drop it if allowed, else raise. tunerl's own env contract errors (NaN, an
        observation outside its space) are bugs to fix, not failures to ride out: they are
        raised to the user as they are."""
        import ray

        if isinstance(error, ray.exceptions.RayTaskError):
            cause = error.as_instanceof_cause()
            if isinstance(cause, EnvError):
                raise EnvError(str(error.cause)) from None
        config = self.config
        restarts = self._restarts_per_index.get(index, 0)
        logger.error("Env runner %d failed: %s", index, error)
        if config.restart_failed_env_runners and restarts < config.max_num_env_runner_restarts:
            ray.kill(self._remote[index], no_restart=True)
            self._remote[index] = self._start_actor(index)
            self._restarts_per_index[index] = restarts + 1
            self.num_restarts += 1
            return
        if config.ignore_env_runner_failures and len(self._remote) > 1:
            ray.kill(self._remote.pop(index), no_restart=True)
            return
        raise EnvRunnerFailure(f"Env runner {index} failed and was not restarted: {error}")

    def add_metrics(self, metrics: dict[str, Any]) -> None:
        """Adds a runner's `get_metrics()` to what `pop_metrics()` returns next."""
        self._episode_returns += metrics["episode_returns"]
        self._episode_lengths += metrics["episode_lengths"]
        self._num_env_steps += metrics["num_env_steps"]

    def pop_metrics(self) -> dict[str, Any]:
        """Episodes finished and env steps sampled since the last call."""
        metrics = {
            "episode_returns": self._episode_returns,
            "episode_lengths": self._episode_lengths,
            "num_env_steps": self._num_env_steps,
        }
        self._episode_returns, self._episode_lengths, self._num_env_steps = [], [], 0
        return metrics

    # ---------------------------------------------------------------------- weights
    def sync_weights(self, weights: dict) -> None:
        """Sends `weights` to every runner: one `ray.put`, then the reference to each."""
        if self.local_env_runner is not None:
            self.local_env_runner.set_weights(weights)
            return
        import ray

        self._weights_ref = ray.put(weights)
        refs = {i: a.set_weights.remote(self._weights_ref) for i, a in self._remote.items()}
        for index, ref in refs.items():
            try:
                ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
                self.handle_failure(index, error)

    def set_config(self, config: Any) -> None:
        """Gives every runner a new config whose changes need no new env."""
        self.config = config
        if self.local_env_runner is not None:
            self.local_env_runner.set_config(config)
            return
        import ray

        ray.get([actor.set_config.remote(config) for actor in self._remote.values()])

    def reset(self) -> None:
        """Every runner starts fresh episodes, seeded from `seed_fn` (after a restore)."""
        if self.local_env_runner is not None:
            self.local_env_runner.reset(self._seed_fn(0))
            return
        import ray

        ray.get([actor.reset.remote(self._seed_fn(i)) for i, actor in self._remote.items()])

    def foreach_env_runner(self, fn: Callable[[EnvRunner], Any]) -> list[Any]:
        """Calls `fn(runner)` on every runner and returns the results."""
        if self.local_env_runner is not None:
            return [fn(self.local_env_runner)]
        import ray

        return ray.get(
            [a.__ray_call__.remote(lambda self_, f=fn: f(self_)) for a in self._remote.values()]
        )

    def stop(self) -> None:
        """Stops every actor this group started."""
        if self.local_env_runner is not None:
            self.local_env_runner.stop()
        if self._remote:
            import ray

            for actor in self._remote.values():
                ray.kill(actor, no_restart=True)
            self._remote.clear()


def _num_episodes(batch: SampleBatch) -> int:
    """Episodes in a batch sampled with `num_episodes` (each one complete)."""
    if len(batch) == 0:
        return 0
    return len(set(batch[columns.EPS_ID].tolist()))
