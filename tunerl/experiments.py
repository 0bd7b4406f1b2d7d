"""Experiments as data: `experiments/*.yaml` name an algorithm, an env, its config, when to
stop, and the return the experiment must reach. The learning tests and benchmarks read them.

    algo: PPO
    env: CartPole-v1
    config: {lr: 0.001, ...}          # AlgorithmConfig fields, flat
    stop: {num_env_steps_sampled_lifetime: 100000}
    target: {metric: env_runners/episode_return_mean, min: 450}
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunerl.core.config import AlgorithmConfig, ConfigError

logger = logging.getLogger(__name__)

_KEYS = {
    "name",
    "algo",
    "env",
    "config",
    "stop",
    "target",
    "description",
    "search_space",
    "num_samples",
}


@dataclass
class Experiment:
    name: str
    algo: str
    env: str
    config: dict[str, Any]
    stop: dict[str, float]
    target: dict[str, Any]
    description: str = ""
    search_space_path: str | None = None
    num_samples: int = 8
    path: Path | None = field(default=None, repr=False)

    @property
    def target_metric(self) -> str:
        return self.target["metric"]

    @property
    def target_value(self) -> float:
        return float(self.target["min"])

    def search_space(self):
        """The experiment's search space (a file named relative to the experiment's folder
        or its parent), with the experiment's config and stop as the fixed part."""
        from tunerl.tuning.search_space import load_search_space

        if not self.search_space_path:
            raise ConfigError(f"Experiment {self.name!r} names no search_space.")
        base = self.path.parent if self.path else Path.cwd()
        candidates = [base / self.search_space_path, base.parent / self.search_space_path]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ConfigError(
                f"Experiment {self.name!r}: search_space {self.search_space_path!r} not found "
                f"(looked in {base} and {base.parent})."
            )
        space = load_search_space(found)
        space.config = {**self.config, **space.config}
        space.stop = dict(self.stop)
        return space

    def algo_config(self, **overrides: Any) -> AlgorithmConfig:
        """The experiment's config, with `overrides` (e.g. `seed=3`) on top."""
        from tunerl import ALGORITHMS

        config = ALGORITHMS[self.algo].get_default_config().environment(self.env)
        return config.update_from_dict({**self.config, **overrides})


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Reads and checks an experiment file; errors name the file and the key."""
    from tunerl import ALGORITHMS

    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment file must be a mapping, got {type(data)}.")
    unknown = set(data) - _KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}.")
    for key in ("algo", "env", "stop", "target"):
        if key not in data:
            raise ConfigError(f"{path}: missing key {key!r}.")
    if data["algo"] not in ALGORITHMS:
        raise ConfigError(f"{path}: algo {data['algo']!r} is not one of {sorted(ALGORITHMS)}.")
    target = data["target"]
    if not isinstance(target, dict) or {"metric", "min"} - set(target):
        raise ConfigError(f"{path}: target needs 'metric' and 'min', got {target!r}.")
    experiment = Experiment(
        name=data.get("name", path.stem),
        algo=data["algo"],
        env=data["env"],
        config=dict(data.get("config") or {}),
        stop=dict(data["stop"]),
        target=dict(target),
        description=data.get("description", ""),
        search_space_path=data.get("search_space"),
        num_samples=int(data.get("num_samples", 8)),
        path=path,
    )
    experiment.algo_config().validate()
    return experiment


def lookup(result: dict[str, Any], key: str) -> Any:
    """`result["env_runners"]["episode_return_mean"]` for key "env_runners/episode_return_mean"."""
    value: Any = result
    for part in key.split("/"):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def should_stop(result: dict[str, Any], stop: dict[str, float]) -> bool:
    """Tune's dict stopper: any metric at or beyond its value."""
    for key, limit in stop.items():
        value = lookup(result, key)
        if value is not None and value == value and value >= limit:
            return True
    return False


def run_experiment(path: str | os.PathLike, sweep: bool = False, **overrides: Any):
    """Runs one trial of an experiment in this process until its stop criteria and returns
    the last result, with `reached_target` added; with `sweep=True` (for an experiment that
    names a search_space) runs its sweep with Tune and returns the ResultGrid."""
    experiment = load_experiment(path)
    if sweep:
        from tunerl.tuning.sweep import run_sweep

        return run_sweep(experiment.search_space(), num_samples=experiment.num_samples, **overrides)
    algo = experiment.algo_config(**overrides).build_algo()
    try:
        while True:
            result = algo.train()
            if should_stop(result, experiment.stop):
                break
    finally:
        algo.stop()
    value = lookup(result, experiment.target_metric)
    result["reached_target"] = value is not None and value >= experiment.target_value
    return result
