"""Algorithm: the Ray Tune Trainable every tunerl algorithm is.

`train()` runs `training_step()` (sample -> learn -> sync) and returns a result with fixed
keys (`tunerl.core.metrics`), the learners' statistics under `learners/<module_id>/`.
Checkpoints are directories of JSON and tensors in the layout `tunerl.core.checkpoint_layout`
describes (one folder per module), checked by a manifest (`tunerl.core.checkpoint_io`).

A subclass sets `config_class` and `learner_class`, and defines `training_step()` unless the
default (synchronous sample -> `learner.update` -> `sync_weights`, PPO's) is what it runs.
What subclasses use is public: `sample_from_runners`, `train_on_batch`, `timer`, `add_time`,
`counters`, `count_trained_steps`, `sync_weights`, `draw_seed`. State of their own (a replay
buffer, a target-update counter) goes through `build_algorithm_state`,
`get_extra_state`/`load_extra_files`/`set_extra_state` and `save_extra_files`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray import tune
from ray.tune.result import EPISODES_TOTAL, TIME_TOTAL_S, TIMESTEPS_TOTAL
from ray.tune.trainable import trainable as tune_trainable

from tunerl._version import __version__
from tunerl.core import checkpoint_fields as fields
from tunerl.core import checkpoint_io, class_resolution, multi_agent
from tunerl.core import metrics as m
from tunerl.core.algorithm_checkpoint import (
    read_learner_state,
    read_run_state,
    write_learner_state,
)
from tunerl.core.callbacks import Callbacks
from tunerl.core.checkpoint_io import CheckpointError
from tunerl.core.checkpoint_layout import (
    RNG_FILE,
    STATE_FILE,
)
from tunerl.core.columns import DEFAULT_MODULE_ID
from tunerl.core.config import AlgorithmConfig
from tunerl.core.config_json import config_from_json, config_to_json
from tunerl.core.env_runner import EnvRunner
from tunerl.core.env_runner_group import EnvRunnerGroup, PendingSample
from tunerl.core.evaluation import Evaluation
from tunerl.core.learner import Learner
from tunerl.core.rl_module import (
    MultiRLModuleSpec,
    RLModule,
    RLModuleSpec,
    UnsupportedSpaceError,
)
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch
from tunerl.env.multi_agent_env import MultiAgentEnv
from tunerl.env.multi_agent_env_runner import MultiAgentEnvRunner
from tunerl.env.registry import make_env, resolve_env_creator

logger = logging.getLogger("tunerl")


class Algorithm(tune.Trainable):
    """Base of all algorithms. Build one with `config.build_algo()`, or let Tune build it
    from a config dict: `tune.Tuner(PPO, param_space=PPOConfig()...)`."""

    config_class: type[AlgorithmConfig] = AlgorithmConfig
    learner_class: type[Learner] = Learner

    def __init__(self, config: AlgorithmConfig | dict | None = None, **kwargs: Any):
        if isinstance(config, AlgorithmConfig):
            config = config.to_dict()
        self._stopped = False
        super().__init__(config=dict(config or {}), **kwargs)

    def _setup_logdir(self) -> None:
        # Outside Tune (no storage) tune.Trainable makes a folder in ~/ray_results for every
        # algorithm built, which most never write to; `logdir` makes it when first asked for.
        if self._storage:
            super()._setup_logdir()
        else:
            self._logdir = None

    @property
    def logdir(self) -> str:
        """The trial folder under Tune; outside Tune a new folder in ~/ray_results, made the
        first time it is asked for (e.g. by `save_to_path()` without a path)."""
        if self._logdir is None:
            root = tune_trainable.DEFAULT_STORAGE_PATH  # where tune.Trainable puts it
            os.makedirs(root, exist_ok=True)
            prefix = datetime.today().strftime("%Y-%m-%d_%H-%M-%S")
            self._logdir = tempfile.mkdtemp(prefix=prefix, dir=root)
        return self._logdir

    def stop(self) -> None:
        """Stops every actor this algorithm started; it cannot train afterwards."""
        self._stopped = True
        super().stop()

    @classmethod
    def get_default_config(cls) -> AlgorithmConfig:
        return cls.config_class(algo_class=cls)

    @classmethod
    def _config_from(cls, config: dict | AlgorithmConfig) -> AlgorithmConfig:
        if isinstance(config, AlgorithmConfig):
            return config.copy()
        return cls.get_default_config().update_from_dict(config)

    @classmethod
    def default_resource_request(cls, config: dict | AlgorithmConfig) -> tune.PlacementGroupFactory:
        """One bundle for the algorithm (learner) process and one per env-runner actor, so a
        trial starts only when everything it will start is reserved."""
        config = cls._config_from(config)
        head = {"CPU": config.num_cpus_for_main_process}
        if config.num_gpus_per_learner:
            head["GPU"] = config.num_gpus_per_learner
        runner = {"CPU": config.num_cpus_per_env_runner}
        if config.num_gpus_per_env_runner:
            runner["GPU"] = config.num_gpus_per_env_runner
        num_runners = config.num_env_runners
        if config.evaluation_interval:
            num_runners += config.evaluation_num_env_runners
        return tune.PlacementGroupFactory(
            [head] + [dict(runner) for _ in range(num_runners)],
            strategy=config.placement_strategy,
        )

    # ------------------------------------------------------------------- life cycle
    def setup(self, config: dict) -> None:
        self.config = self._config_from(config)
        self.config.validate()
        self.config.freeze()
        # Tune's reset() overwrites self.config with the new trial's dict before calling
        # reset_config(); this keeps the config the runners were built with.
        self._built_config = self.config
        torch.set_num_threads(max(1, int(self.config.num_cpus_for_main_process)))
        logger.setLevel(self.config.log_level.replace("WARN", "WARNING"))
        callbacks_class = self.config.callbacks_class or Callbacks
        self.callbacks = callbacks_class()
        env = self.config.env
        self._env_creator = resolve_env_creator(env) if env is not None else None
        self._build()
        self.callbacks.on_algorithm_init(algorithm=self)

    def _build(self) -> None:
        """Seeds, module, learner, runners and counters, from `self.config`."""
        config = self.config
        seed = config.seed if config.seed is not None else _fresh_seed()
        self._rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.module_spec, self._runner_class = self._module_spec_and_runner_class()
        self.is_multi_agent = issubclass(self._runner_class, MultiAgentEnvRunner)
        try:
            self.learner = self._make_learner(config)
            self._load_module_states()
        except UnsupportedSpaceError as error:
            # Raised while building, before any training: say which algorithm refused the env.
            raise UnsupportedSpaceError(
                f"{type(self).__name__} cannot train on env {config.env!r}: {error}"
            ) from None
        self.evaluation: Evaluation | None = None
        self.env_runner_group: EnvRunnerGroup | None = None
        self._runners_have_weights = False
        try:
            if self.samples_from_env:
                self.env_runner_group = EnvRunnerGroup(
                    config,
                    self.module_spec,
                    config.num_env_runners,
                    self._runner_seed,
                    self._env_creator,
                    runner_class=self._runner_class,
                )
            self.evaluation = Evaluation(
                config,
                self.module_spec,
                self._runner_seed,
                self._env_creator,
                self._runner_class,
                self.draw_seed,
            )
            self._reset_counters()
            self.build_algorithm_state()
            self.sync_weights()
        except BaseException:
            # A build that fails (e.g. evaluation runners that cannot be placed) is never
            # stopped by its caller: the training runners it started must not hold their
            # CPUs for the rest of the process.
            self.cleanup()
            raise

    @property
    def eval_env_runner_group(self) -> EnvRunnerGroup | None:
        """The evaluation runners (RLlib's name), or None before the first evaluation."""
        evaluation = getattr(self, "evaluation", None)
        return evaluation.env_runner_group if evaluation is not None else None

    def _make_learner(self, config: AlgorithmConfig) -> Learner:
        learner_class = config.learner_class or self.learner_class
        return learner_class(config, self.module_spec.build(), self.draw_seed())

    def build_algorithm_state(self) -> None:
        """Builds an algorithm's own state from `self.config` (e.g. a replay buffer); runs
        at setup and whenever `reset_config` starts a new trial in this process."""

    def _reset_counters(self) -> None:
        self.counters = {
            m.NUM_ENV_STEPS_SAMPLED_LIFETIME: 0,
            m.NUM_ENV_STEPS_TRAINED_LIFETIME: 0,
            m.NUM_EPISODES_LIFETIME: 0,
        }
        if self.is_multi_agent:
            # Per module under `num_module_steps_sampled_lifetime/<module_id>` (nested in the
            # result, flat here so a checkpoint holds integers only).
            self.counters[m.NUM_AGENT_STEPS_SAMPLED_LIFETIME] = 0
            for module_id in self.module_spec.module_specs:
                self.counters[f"{m.NUM_MODULE_STEPS_SAMPLED_LIFETIME}/{module_id}"] = 0
        self._episode_stats = m.EpisodeStats(self.config.metrics_num_episodes_for_smoothing)
        self._last_evaluation: dict[str, Any] | None = None
        self._timers: dict[str, float] = defaultdict(float)

    def draw_seed(self) -> int:
        """A seed from the algorithm's own (checkpointed) random stream."""
        return int(self._rng.integers(0, 2**31 - 1))

    def _runner_seed(self, worker_index: int) -> int:
        del worker_index  # every runner draws its own seed from the algorithm's stream
        return self.draw_seed()

    def _module_spec_and_runner_class(self) -> tuple[MultiRLModuleSpec, type]:
        """The spec of every module (`default_module_spec` for each, with the spaces of the
        agents it serves) and the runner class: a MultiAgentEnv is sampled by
        MultiAgentEnvRunner, any other env by EnvRunner."""
        config = self.config
        given = config.observation_space, config.action_space
        if None not in given:
            # Samples come from outside (external clients): the spaces are given.
            spec = self.default_module_spec(DEFAULT_MODULE_ID, *given)
            specs = {DEFAULT_MODULE_ID: spec}
            return MultiRLModuleSpec(rl_module_specs=specs), config.env_runner_cls or EnvRunner
        probe = make_env(config.env, config.env_config, 0, 0, self._env_creator)
        try:
            if isinstance(probe, MultiAgentEnv):
                spaces = multi_agent.module_spaces(config, probe)
                runner_class: type = MultiAgentEnvRunner
            elif config.is_multi_agent:
                raise multi_agent.MultiAgentError(
                    f"{type(self).__name__} got .multi_agent(policies={config.policies!r}), but "
                    f"env {config.env!r} is a single-agent {type(probe).__name__}, not a "
                    "tunerl.env.multi_agent_env.MultiAgentEnv: wrap it (make_multi_agent, or "
                    "the PettingZoo wrappers in tunerl.env.wrappers.pettingzoo_env) or drop "
                    "the policies."
                )
            else:
                spaces = {
                    DEFAULT_MODULE_ID: (
                        config.observation_space or probe.observation_space,
                        config.action_space or probe.action_space,
                    )
                }
                runner_class = config.env_runner_cls or EnvRunner
        finally:
            probe.close()
        specs = {
            module_id: self.default_module_spec(module_id, obs_space, action_space)
            for module_id, (obs_space, action_space) in spaces.items()
        }
        return MultiRLModuleSpec(rl_module_specs=specs), runner_class

    def default_module_spec(
        self, module_id: str, observation_space: gym.Space, action_space: gym.Space
    ) -> RLModuleSpec:
        """The spec of module `module_id`, which acts in these spaces: the user's spec for
        it (`rl_module_spec`, or its entry of a MultiRLModuleSpec), `model_config` with the
        module's own overrides (its PolicySpec's `config["model_config"]`). Algorithms with
        a module of their own (DQN, SAC) fill in its class."""
        config = self.config
        user_spec = multi_agent.user_module_spec(config, module_id) or RLModuleSpec()
        overrides = multi_agent.module_overrides(config, module_id).get("model_config", {})
        return RLModuleSpec(
            module_class=user_spec.module_class,
            observation_space=user_spec.observation_space or observation_space,
            action_space=user_spec.action_space or action_space,
            model_config={**config.model_config, **overrides, **(user_spec.model_config or {})},
            observation_filter=config.observation_filter,
            load_state_path=user_spec.load_state_path,
        )

    def _load_module_states(self) -> None:
        """Starts each module whose spec has a `load_state_path` with the weights there (a
        module of another run: a pretrained policy, a frozen opponent)."""
        for module_id, spec in self.module_spec.module_specs.items():
            if spec.load_state_path is None:
                continue
            loaded = RLModule.from_checkpoint(spec.load_state_path)
            module = self.learner.module[module_id]
            problem = _state_mismatch(loaded.get_state(), module.get_state())
            if problem:
                raise CheckpointError(
                    f"RLModuleSpec(load_state_path={os.fspath(spec.load_state_path)!r}) of "
                    f"module {module_id!r}: its weights do not fit this module ({problem}). It "
                    f"holds a {type(loaded).__name__} for {loaded.observation_space} -> "
                    f"{loaded.action_space}; this module is a {type(module).__name__} for "
                    f"{spec.observation_space} -> {spec.action_space}: the class, spaces and "
                    "model_config must be the same."
                )
            module.set_state(loaded.get_state())

    def cleanup(self) -> None:
        """Stops every actor this algorithm started."""
        if getattr(self, "env_runner_group", None) is not None:
            self.env_runner_group.stop()
        if getattr(self, "evaluation", None) is not None:
            self.evaluation.stop()

    def reset_config(self, new_config: dict) -> bool:
        """Takes a new trial's config without a new process (Tune's `reuse_actors`, PBT).
        Runners are rebuilt only when a field they depend on changed; learner, counters and
        seeds start fresh (PBT then restores a checkpoint on top)."""
        old = self._built_config
        new = self._config_from(new_config)
        new.validate()
        new.freeze()
        self.config = self._built_config = new
        self.callbacks = (new.callbacks_class or Callbacks)()
        torch.set_num_threads(max(1, int(new.num_cpus_for_main_process)))
        if new.needs_new_runners(old):
            self.cleanup()
            self._env_creator = resolve_env_creator(new.env)
            self._build()
            return True
        seed = new.seed if new.seed is not None else _fresh_seed()
        self._rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.learner = self._make_learner(new)
        if self.env_runner_group is not None:
            self.env_runner_group.set_config(new)
            self.env_runner_group.reset()
        self.evaluation.set_config(new)
        if self.eval_env_runner_group is not None:
            self.eval_env_runner_group.reset()
        self._reset_counters()
        self.build_algorithm_state()
        self.sync_weights()
        return True

    def get_auto_filled_metrics(self, *args: Any, **kwargs: Any) -> dict:
        # Tune copies `self.config` into every result; it must be the plain dict Tune's
        # loggers and progress reporter expect, not the AlgorithmConfig object.
        metrics = super().get_auto_filled_metrics(*args, **kwargs)
        if isinstance(metrics.get("config"), AlgorithmConfig):
            metrics["config"] = metrics["config"].to_dict()
        return metrics

    # ---------------------------------------------------------------------- training
    @contextmanager
    def timer(self, name: str):
        """Adds the time spent in the block to `timers/<name>` of this iteration's result."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._timers[name] += time.perf_counter() - start

    def add_time(self, name: str, seconds: float) -> None:
        """Adds `seconds` (measured elsewhere, e.g. in a learner thread) to `timers/<name>`."""
        self._timers[name] += seconds

    def training_step(self) -> dict[str, Any]:
        """One sample -> learn -> sync iteration; returns `{"learners": {module_id: stats}}`.

        The default is the synchronous on-policy one (PPO's, VPG's): sample
        `train_batch_size_per_learner` env steps, one `learner.update` on them (its
        postprocessing and SGD), the observation filters, then `sync_weights()`."""
        # 1. sample
        batch = self.sample_from_runners(self.config.train_batch_size_per_learner)
        # 2. learn
        results = self.train_on_batch(batch)
        # 3. sync
        self.sync_weights()
        return results

    def train_on_batch(self, batch: MultiAgentBatch | SampleBatch) -> dict[str, Any]:
        """One `learner.update(batch)` (its postprocessing and SGD) at the clock `timestep`,
        timed under `timers/learn`; then the batch's observations go into the modules'
        observation filters and its env steps into `num_env_steps_trained_lifetime`.
        Returns `{"learners": {module_id: stats}}`; a SampleBatch is `default_policy`'s.
        RLlib's `train_one_step(algo, batch)` (`tunerl.execution`) calls it."""
        batch = MultiAgentBatch.wrap_as_needed(batch)
        with self.timer(m.LEARN_TIMER):
            results = self.learner.update(batch, self.timestep)
            self.learner.update_observation_filters(batch)
        self.count_trained_steps(len(batch))
        return {m.LEARNER_RESULTS: results}

    @property
    def samples_from_env(self) -> bool:
        """Whether this algorithm builds training env runners and samples from them. An
        algorithm that learns from data (offline RL) returns False: it builds only its
        evaluation runners, and its clock (`timestep`) counts trained env steps."""
        return True

    @property
    def timestep(self) -> int:
        """The clock learning-rate schedules and target updates read: env steps sampled
        (RLlib's), or env steps trained for an algorithm that does not sample."""
        if self.samples_from_env:
            return self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        return self.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME]

    def step(self) -> dict[str, Any]:
        if self._stopped:
            raise RuntimeError(
                f"This {type(self).__name__} was stopped (algo.stop() released its env runners), "
                "so it cannot train: build a new one with config.build_algo(), or continue from "
                f"a checkpoint with {type(self).__name__}.from_checkpoint(path)."
            )
        self._timers = defaultdict(float)
        start = time.perf_counter()
        steps_before = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        trained_before = self.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME]
        learner_results: dict[str, Any] = {}
        evaluate_now = self.evaluation.env_due(self._iteration)
        parallel_evaluation = None
        if evaluate_now and self.config.evaluation_parallel_to_training:
            parallel_evaluation = self._start_evaluation()
        while True:
            learner_results = self.training_step()
            self._record_runner_metrics()
            if self._iteration_done(start, steps_before, trained_before):
                break
        # Each part of the evaluation (in the env, offline) keeps its latest result.
        evaluation = dict(self._last_evaluation or {})
        if parallel_evaluation is not None:
            evaluation.update(self._finish_evaluation(parallel_evaluation))
        elif evaluate_now:
            evaluation.update(self.evaluate())
        if self.evaluation.offline_due(self._iteration):
            evaluation[m.OFFLINE_EVAL_RUNNER_RESULTS] = self.evaluate_offline()
        self._last_evaluation = evaluation or None
        elapsed = time.perf_counter() - start
        sampled = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] - steps_before
        env_runner_results = self._episode_stats.reduce()
        env_runner_results[m.NUM_ENV_STEPS_SAMPLED] = sampled
        result: dict[str, Any] = {
            m.ENV_RUNNER_RESULTS: env_runner_results,
            m.LEARNER_RESULTS: learner_results.get(m.LEARNER_RESULTS, {}),
            **_nested(self.counters),
            m.ENV_STEPS_PER_S: sampled / elapsed if elapsed > 0 else 0.0,
            m.TIMERS: dict(self._timers),
            m.FAULT_TOLERANCE: self._fault_tolerance_results(),
        }
        if self._last_evaluation is not None:
            result[m.EVALUATION_RESULTS] = self._last_evaluation
        for key, value in learner_results.items():
            result.setdefault(key, value)
        self.callbacks.on_train_result(algorithm=self, result=result)
        return result

    def _iteration_done(self, start: float, sampled_before: int, trained_before: int) -> bool:
        """An iteration repeats `training_step()` until it took `min_time_s_per_iteration`,
        sampled `min_sample_timesteps_per_iteration` env steps and trained on
        `min_train_timesteps_per_iteration`."""
        config = self.config
        sampled = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] - sampled_before
        trained = self.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] - trained_before
        return (
            time.perf_counter() - start >= (config.min_time_s_per_iteration or 0)
            # An algorithm that does not sample counts trained steps only.
            and (not self.samples_from_env or sampled >= config.min_sample_timesteps_per_iteration)
            and trained >= config.min_train_timesteps_per_iteration
        )

    def _fault_tolerance_results(self) -> dict[str, int]:
        group = self.env_runner_group
        if group is None:
            return {m.NUM_HEALTHY_ENV_RUNNERS: 0, m.NUM_ENV_RUNNER_RESTARTS: 0}
        return {
            m.NUM_HEALTHY_ENV_RUNNERS: group.num_healthy_remote_workers(),
            m.NUM_ENV_RUNNER_RESTARTS: group.num_restarts,
        }

    def sample_from_runners(self, num_timesteps: int) -> MultiAgentBatch:
        """At least `num_timesteps` env steps from the training runners, timed under
        `timers/sample`; records their steps and episodes in the counters."""
        if self.env_runner_group is None:
            raise RuntimeError(
                f"{type(self).__name__} samples from no env (samples_from_env is False): it "
                "has evaluation runners only."
            )
        with self.timer(m.SAMPLE_TIMER):
            batch = self.env_runner_group.sample(num_timesteps=num_timesteps)
        self._record_runner_metrics()
        self.callbacks.on_sample_end(algorithm=self, samples=batch)
        return batch

    def _record_runner_metrics(self) -> None:
        """Moves the episodes and env steps the training runners finished since the last
        call into the counters and the smoothed episode stats. `step()` calls it after every
        `training_step()`, so a custom one that samples through `env_runner_group` directly
        is counted too."""
        if self.env_runner_group is None:
            return
        runner_metrics = self.env_runner_group.pop_metrics()
        self._episode_stats.extend(
            runner_metrics["episode_returns"],
            runner_metrics["episode_lengths"],
            runner_metrics.get("agent_episode_returns"),
            runner_metrics.get("module_episode_returns"),
        )
        counters = self.counters
        counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] += runner_metrics["num_env_steps"]
        counters[m.NUM_EPISODES_LIFETIME] += len(runner_metrics["episode_returns"])
        if m.NUM_AGENT_STEPS_SAMPLED_LIFETIME in counters:
            counters[m.NUM_AGENT_STEPS_SAMPLED_LIFETIME] += runner_metrics.get("num_agent_steps", 0)
            for module_id, steps in runner_metrics.get("num_module_steps", {}).items():
                key = f"{m.NUM_MODULE_STEPS_SAMPLED_LIFETIME}/{module_id}"
                counters[key] = counters.get(key, 0) + steps

    def count_trained_steps(self, num_env_steps: int) -> None:
        """Adds to `num_env_steps_trained_lifetime` (the rows a learner update trained on)."""
        self.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] += num_env_steps

    def wait_for_learner(self) -> None:
        """Waits until the learner has trained every batch it was given, so its state can be
        read or replaced: called before `get_module`, `sync_weights`, evaluation, saving and
        restoring. A no-op here; an algorithm whose learner trains in the background (IMPALA,
        APPO) waits for it."""

    def sync_weights(self) -> None:
        """Sends the learner's current weights, `{module_id: weights}`, to every env runner
        (training and evaluation), timed under `timers/sync`: one `ray.put`, then the
        reference to each actor. A local runner on the learner's device acts with the
        learner's modules themselves, so its sync costs nothing (for DQN and SAC, which sync
        after every few env steps, copying was a fifth of the run time)."""
        self.wait_for_learner()
        with self.timer(m.SYNC_TIMER):
            weights = None
            for group in (self.env_runner_group, self.eval_env_runner_group):
                if group is not None:
                    weights = self._send_weights(group, weights)
        self._runners_have_weights = True

    def _send_weights(self, group: EnvRunnerGroup, weights: dict | None = None) -> dict | None:
        """Gives `group` the learner's weights (`weights`, if already taken); returns them."""
        if group.local_env_runner is not None and self.learner.device.type == "cpu":
            group.local_env_runner.module = self.learner.module
            return weights
        if weights is None:
            weights = self.learner.module.get_state()
            if self._runners_have_weights:
                # Modules the learner does not train keep the weights the runners have.
                weights = {mid: w for mid, w in weights.items() if self.learner.should_train(mid)}
        group.sync_weights(weights)
        return weights

    def set_weights(self, weights: dict[str, dict[str, torch.Tensor]]) -> None:
        """Loads `{module_id: weights}` into the learner's modules (e.g. a frozen opponent's
        snapshot of the trained module) and sends every module to the runners."""
        self.wait_for_learner()
        self.learner.module.set_state(weights)
        self._runners_have_weights = False
        self.sync_weights()

    def get_weights(self, module_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """`{module_id: weights}` of the learner's modules (all, or `module_ids`)."""
        self.wait_for_learner()
        state = self.learner.module.get_state()
        return {mid: state[mid] for mid in (module_ids or state)}

    def evaluate(self) -> dict[str, Any]:
        """Runs `evaluation_duration` episodes (split over the evaluation runners) or env
        steps with `evaluation_config` applied and the learner's current weights; returns
        `{"env_runners": {...}}` as reported under `evaluation/`."""
        with self.timer(m.EVALUATION_TIMER):
            pending = self._start_evaluation()
        return self._finish_evaluation(pending)

    def evaluate_offline(self) -> dict[str, Any]:
        """The module's return estimated from the recorded episodes of
        `offline_evaluation_input` by the estimators of `offline_evaluation_type`, as
        reported under `evaluation/offline_eval_runners/` (tunerl.offline.offline_evaluation).
        FQE keeps its Q-network between calls; a restored algorithm starts it afresh."""
        self.wait_for_learner()
        with self.timer(m.OFFLINE_EVALUATION_TIMER):
            return self.evaluation.offline(self.learner.module)

    def _start_evaluation(self) -> PendingSample:
        """Sends the learner's weights to the evaluation runners and starts their sample
        (remote runners: without waiting for it)."""
        self.wait_for_learner()
        self._send_weights(self.evaluation.group())
        return self.evaluation.start()

    def _finish_evaluation(self, pending: PendingSample) -> dict[str, Any]:
        with self.timer(m.EVALUATION_TIMER):
            return self.evaluation.finish(pending)

    def get_module(self, module_id: str = DEFAULT_MODULE_ID) -> RLModule:
        """The module `module_id` being trained (the learner's copy, always current)."""
        self.wait_for_learner()
        if module_id not in self.learner.module:
            raise KeyError(
                f"No module {module_id!r}; this algorithm trains {self.learner.module.keys()}."
            )
        return self.learner.module[module_id]

    # -------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, checkpoint_dir: str) -> str:
        self.wait_for_learner()
        directory = Path(checkpoint_dir)
        write_learner_state(directory, self.learner)
        checkpoint_io.save_tensors(directory / RNG_FILE, {"torch": torch.get_rng_state()})
        checkpoint_io.write_json(
            directory / STATE_FILE,
            {
                "algo_class": class_resolution.class_path(type(self)),
                "tunerl_version": __version__,
                "config": config_to_json(self.config),
                "counters": self.counters,
                "iteration": self._iteration,
                "rng": self._rng.bit_generator.state,
                "episode_returns": list(self._episode_stats.returns),
                "episode_lengths": list(self._episode_stats.lengths),
                "last_evaluation": self._last_evaluation,
                "extra": self.get_extra_state(),
            },
        )
        self.save_extra_files(directory)
        checkpoint_io.write_manifest(directory)
        return checkpoint_dir

    def load_checkpoint(self, checkpoint: str | dict) -> None:
        """Tune's hook (called by `restore`, `restore_from_path` and Tune's own restore of a
        trial): reads and checks the whole checkpoint, then applies it. A checkpoint that
        fails any check raises CheckpointError and changes nothing."""
        self.wait_for_learner()
        if not isinstance(checkpoint, str | os.PathLike):
            raise CheckpointError(
                "tunerl checkpoints are directories of JSON and tensors; got a dict checkpoint "
                "(Ray's pickled _dict_checkpoint.pkl), which tunerl never loads."
            )
        with checkpoint_io.CheckpointReader(checkpoint) as reader:
            restored = self._read_checkpoint(reader)
        self._apply_checkpoint(restored)

    def restore(self, checkpoint_path: Any) -> None:
        """`tune.Trainable.restore` without its pickle: a path, a `tune.Checkpoint` or the
        result of `save()` is loaded by `load_checkpoint` (Ray's version unpickles a
        `_dict_checkpoint.pkl` first, which a tunerl checkpoint refuses)."""
        metrics: dict[str, Any] = {}
        if isinstance(checkpoint_path, tune.Checkpoint):  # before PathLike: it is one
            checkpoint = checkpoint_path
        elif isinstance(checkpoint_path, str | os.PathLike):
            checkpoint = tune.Checkpoint.from_directory(os.fspath(checkpoint_path))
        elif isinstance(getattr(checkpoint_path, "checkpoint", None), tune.Checkpoint):
            checkpoint, metrics = checkpoint_path.checkpoint, checkpoint_path.metrics or {}
        else:
            raise CheckpointError(
                f"restore() takes a checkpoint folder, a tune.Checkpoint or the result of "
                f"save(); got {type(checkpoint_path).__name__}."
            )
        with checkpoint.as_directory() as directory:
            self.load_checkpoint(directory)
        # What Trainable.restore also brings back, once the checkpoint loaded.
        self._time_total = metrics.get(TIME_TOTAL_S, 0)
        self._time_since_restore = 0.0
        self._iterations_since_restore = 0
        self._timesteps_total = metrics.get(TIMESTEPS_TOTAL)
        self._timesteps_since_restore = 0
        self._episodes_total = metrics.get(EPISODES_TOTAL)
        self._restored = True

    def _read_checkpoint(self, reader: checkpoint_io.CheckpointReader) -> dict[str, Any]:
        """Everything a restore applies, read and checked against the live algorithm
        (weights and optimizer state loaded into a copy of the learner first); changes
        nothing."""
        run = read_run_state(reader, list(self.counters), type(self._rng.bit_generator))
        learner_state = read_learner_state(reader, self.learner)
        extra = run.pop("extra")
        return {
            "learner": learner_state,
            **run,
            "extra": self.load_extra_files(reader, extra),
        }

    def _apply_checkpoint(self, restored: dict[str, Any]) -> None:
        self.learner.set_state(restored["learner"])
        torch.set_rng_state(restored["torch_rng"])
        self.counters = dict(restored["counters"])
        self._iteration = restored["iteration"]
        self._rng.bit_generator.state = restored["rng"]
        self._episode_stats = m.EpisodeStats(self.config.metrics_num_episodes_for_smoothing)
        self._episode_stats.extend(restored["episode_returns"], restored["episode_lengths"])
        self._episode_stats.num_new_episodes = 0
        self._last_evaluation = restored["last_evaluation"]
        self.set_extra_state(restored["extra"])
        # Runners start fresh episodes, seeded from the restored stream: two restores of one
        # checkpoint continue identically.
        for group in (self.env_runner_group, self.eval_env_runner_group):
            if group is not None:
                group.reset()
        self._runners_have_weights = False
        self.sync_weights()
        self.callbacks.on_checkpoint_loaded(algorithm=self)

    def get_extra_state(self) -> dict[str, Any]:
        """JSON-able state of an algorithm's own (e.g. DQN's target-update counter)."""
        return {}

    def save_extra_files(self, directory: Path) -> None:
        """Writes an algorithm's own files into a checkpoint (e.g. a replay buffer); they are
        covered by the manifest."""

    def load_extra_files(
        self, reader: checkpoint_io.CheckpointReader, extra_state: dict[str, Any]
    ) -> Any:
        """Reads and checks the algorithm's own part of a checkpoint, changing nothing:
        `extra_state` as `get_extra_state` returned it, and the files `save_extra_files`
        wrote, through `reader` (`reader.arrays(name)`, `.tensors(name)`, `.json(name)`).
        Raises CheckpointError naming the file and field of anything wrong; returns what
        `set_extra_state` applies."""
        del reader
        return extra_state

    def set_extra_state(self, state: Any) -> None:
        """Applies what `load_extra_files` returned. It runs only after every part of the
        checkpoint was read and checked, so it must not fail."""
        del state

    def save_to_path(self, path: str | os.PathLike | None = None) -> str:
        """Writes a checkpoint to `path` (default: `checkpoint_<iteration>` in the logdir),
        atomically: at every moment `path` holds the previous checkpoint or the new one.
        Refuses a `path` that exists and is not a tunerl checkpoint (e.g. "." or a folder of
        yours), so a save never deletes what it did not write."""
        if path is None:
            path = Path(self.logdir) / f"checkpoint_{self._iteration:06d}"
        with checkpoint_io.atomic_directory(path) as directory:
            self.save_checkpoint(str(directory))
        return os.path.abspath(path)

    def restore_from_path(self, path: str | os.PathLike) -> None:
        """Loads a checkpoint written by `save_to_path`, `save()` or Tune; on any error it
        raises CheckpointError and leaves the algorithm as it was."""
        self.load_checkpoint(os.fspath(path))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        allow_import: Sequence[str] = (),
        config_overrides: dict[str, Any] | None = None,
    ) -> Algorithm:
        """Builds the algorithm a checkpoint was written by, with its config, and restores it.

        Classes the checkpoint names (the algorithm, `callbacks_class`, `learner_class`, the
        module class) must already be imported in this process; nothing is imported unless
        its package is in `allow_import` (or $TUNERL_ALLOW_IMPORT), e.g.
        `allow_import=["my_models"]`. The env must be a Gymnasium id or a `register_env`
        name of this process. A function of the config (`policy_mapping_fn`,
        `policies_to_train`) is not stored in a checkpoint: pass it in `config_overrides`."""
        with checkpoint_io.CheckpointReader(path) as reader:
            state = fields.json_object(reader, STATE_FILE)
            where = f"{reader.path(STATE_FILE)}: algo_class"
            algo_class = class_resolution.resolve_class(
                state.get("algo_class"), Algorithm, where, allow_import
            )
            if not issubclass(algo_class, cls):
                raise CheckpointError(
                    f"{reader.directory} holds a {algo_class.__name__} checkpoint, not a "
                    f"{cls.__name__}."
                )
            config = config_from_json(
                algo_class,
                state.get("config"),
                str(reader.path(STATE_FILE)),
                allow_import,
                config_overrides,
            )
            algo = algo_class(config=config)
            try:
                algo._apply_checkpoint(algo._read_checkpoint(reader))
            except BaseException:
                algo.stop()
                raise
        return algo


def _state_mismatch(loaded: dict, live: dict) -> str | None:
    """The first difference between two module states (names and shapes), or None."""
    if set(loaded) != set(live):
        extra, missing = sorted(set(loaded) - set(live)), sorted(set(live) - set(loaded))
        return f"tensors it has and this module lacks: {extra[:3]}; lacks: {missing[:3]}"
    for name, tensor in live.items():
        if tuple(loaded[name].shape) != tuple(tensor.shape):
            return f"{name} is {tuple(loaded[name].shape)}, here {tuple(tensor.shape)}"
    return None


def _nested(counters: dict[str, int]) -> dict[str, Any]:
    """`{"a/b": 1}` as `{"a": {"b": 1}}` (Tune flattens it back to `a/b`)."""
    out: dict[str, Any] = {}
    for key, value in counters.items():
        head, _, tail = key.partition("/")
        if tail:
            out.setdefault(head, {})[tail] = value
        else:
            out[key] = value
    return out


def _fresh_seed() -> int:
    return int(np.random.SeedSequence().entropy % 2**31)
