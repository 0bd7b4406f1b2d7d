"""An algorithm's evaluation: episodes in the env on runners of its own (with
`evaluation_config` applied), and return estimates from recorded episodes without an env
(`offline_evaluation_*`, tunerl.offline.offline_evaluation).

`Evaluation` owns the evaluation runners and the offline evaluator; the Algorithm decides
when to evaluate, gives the runners its weights and reports the results under `evaluation/`
(`evaluation/env_runners/...` and `evaluation/offline_eval_runners/...`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tunerl.core import metrics as m
from tunerl.core.config import AlgorithmConfig
from tunerl.core.env_runner_group import EnvRunnerGroup, PendingSample
from tunerl.core.fields import ConfigError
from tunerl.core.rl_module import MultiRLModule, MultiRLModuleSpec

logger = logging.getLogger("tunerl")


class Evaluation:
    """The evaluation runners (built at once where `evaluation_interval` is set, else on
    the first `evaluate()`) and the offline evaluator (where `offline_evaluation_interval`
    is set)."""

    def __init__(
        self,
        config: AlgorithmConfig,
        module_spec: MultiRLModuleSpec,
        runner_seed: Callable[[int], int],
        env_creator: Any,
        runner_class: type,
        seed: Callable[[], int],
    ):
        self.config = config
        self._module_spec = module_spec
        self._runner_seed = runner_seed
        self._env_creator = env_creator
        self._runner_class = runner_class
        self.env_runner_group: EnvRunnerGroup | None = None
        self.offline_evaluators: dict[str, Any] = {}
        try:
            if config.evaluation_interval:
                self.env_runner_group = self._make_group()
            self.offline_evaluators = _make_offline_evaluators(config, module_spec, seed)
        except BaseException:
            self.stop()
            raise

    def _make_group(self) -> EnvRunnerGroup:
        config = self.config
        # Evaluation runners record only where evaluation_config names an output of their own.
        return EnvRunnerGroup(
            config.with_overrides({"output": None, **config.evaluation_config}),
            self._module_spec,
            config.evaluation_num_env_runners,
            self._runner_seed,
            self._env_creator,
            count_field="evaluation_num_env_runners",
            runner_class=self._runner_class,
        )

    def env_due(self, iteration: int) -> bool:
        """Whether iteration `iteration` (from 0) ends with an evaluation in the env."""
        interval = self.config.evaluation_interval
        return bool(interval) and (iteration + 1) % interval == 0

    def offline_due(self, iteration: int) -> bool:
        interval = self.config.offline_evaluation_interval
        return bool(interval) and (iteration + 1) % interval == 0

    def group(self) -> EnvRunnerGroup:
        """The evaluation runners, built now if no `evaluation_interval` built them."""
        if self.env_runner_group is None:
            self.env_runner_group = self._make_group()
        return self.env_runner_group

    def start(self) -> PendingSample:
        """Starts `evaluation_duration` episodes or env steps on the evaluation runners
        (remote runners: without waiting); they must have the weights to evaluate."""
        group, config = self.group(), self.config
        if config.evaluation_duration_unit == "episodes":
            return group.start_sample(num_episodes=config.evaluation_duration)
        return group.start_sample(num_timesteps=config.evaluation_duration)

    def finish(self, pending: PendingSample) -> dict[str, Any]:
        """Waits for `pending` and returns `{"env_runners": {...}}` over its episodes."""
        group, config = self.group(), self.config
        group.finish_sample(pending)
        runner_metrics = group.pop_metrics()
        num_episodes = len(runner_metrics["episode_returns"])
        asked = config.evaluation_duration
        if config.evaluation_duration_unit == "episodes" and num_episodes != asked:
            logger.warning(
                "Evaluation returned %d of the evaluation_duration=%d episodes asked for (runners "
                "failed or were later than sample_timeout_s; see the messages above).",
                num_episodes,
                asked,
            )
        stats = m.EpisodeStats(window=max(num_episodes, 1))
        stats.extend(
            runner_metrics["episode_returns"],
            runner_metrics["episode_lengths"],
            runner_metrics.get("agent_episode_returns"),
            runner_metrics.get("module_episode_returns"),
        )
        results = stats.reduce()
        results[m.NUM_ENV_STEPS_SAMPLED] = runner_metrics["num_env_steps"]
        return {m.ENV_RUNNER_RESULTS: results}

    def offline(self, modules: MultiRLModule) -> dict[str, Any]:
        """The modules' returns estimated from the recorded episodes (the results under
        `evaluation/offline_eval_runners/`): one module's at the top, or with several
        modules each one's under its id (the mean return of one agent's episode)."""
        if not self.offline_evaluators:  # called without an offline_evaluation_interval
            raise ConfigError(
                "evaluate_offline() needs .evaluation(offline_evaluation_interval=N, "
                "offline_evaluation_type=...), which reads the recorded episodes at build."
            )
        results = {
            module_id: evaluator.evaluate(modules[module_id])
            for module_id, evaluator in self.offline_evaluators.items()
        }
        if len(results) == 1:
            (only,) = results.values()
            return only
        return results

    def set_config(self, config: AlgorithmConfig) -> None:
        """A new trial's config on the same runners (`Algorithm.reset_config`)."""
        self.config = config
        if self.env_runner_group is not None:
            self.env_runner_group.set_config(config.with_overrides(config.evaluation_config))

    def stop(self) -> None:
        if self.env_runner_group is not None:
            self.env_runner_group.stop()


def _make_offline_evaluators(
    config: AlgorithmConfig, module_spec: MultiRLModuleSpec, seed: Callable[[], int]
) -> dict[str, Any]:
    """`{module_id: OfflineEvaluator}` where offline_evaluation_interval is set (pyarrow is
    imported only then: it adds to every other algorithm's start). A multi-agent config has
    one per module, on the rows its `module_id` column names (each agent's own episodes)."""
    if not config.offline_evaluation_interval:
        return {}
    from tunerl.offline.offline_evaluation import OfflineEvaluator

    specs = module_spec.rl_module_specs
    multi = len(specs) > 1
    return {
        module_id: OfflineEvaluator(
            config,
            spec.observation_space,
            spec.action_space,
            seed(),
            module_id=module_id if multi else None,
        )
        for module_id, spec in specs.items()
    }
