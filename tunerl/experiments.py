"""Experiments as data: `experiments/*.yaml` name an algorithm, an env, its config, when to
stop, and the return the experiment must reach. The learning tests and benchmarks read them.

    algo: PPO
    env: CartPole-v1
    config: {lr: 0.001, ...}          # AlgorithmConfig fields, flat
    stop: {num_env_steps_sampled_lifetime: 100000}
    target: {metric: env_runners/episode_return_mean, min: 450}
    search_space: search_spaces/ppo_cartpole.yaml   # optional: what `tunerl tune` sweeps
    num_samples: 16                                  # optional: trials of that sweep

`train_until` is tunerl's one training loop outside Tune: `run_experiment` and `tunerl train`
both run through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunerl.core.config import AlgorithmConfig, ConfigError
from tunerl.tuning.files import (
    algorithm_class,
    closest,
    default_config,
    get_path,
    is_number,
    read_yaml,
)
from tunerl.tuning.search_space import SearchSpace
from tunerl.tuning.search_space_file import SearchSpaceError, search_space_from_dict
from tunerl.tuning.stopping import check_stop, reached_stop_keys, should_stop

__all__ = [
    "DEFAULT_NUM_SAMPLES",
    "Experiment",
    "TrainingRun",
    "experiment_from_dict",
    "load_experiment",
    "load_sweep_file",
    "lookup",
    "reached_stop_keys",
    "run_experiment",
    "should_stop",
    "train_until",
]

# The name under which the learning tests and benchmarks read a result key.
lookup = get_path
_REQUIRED_KEYS = ("algo", "env", "stop", "target")
_KEYS = (*_REQUIRED_KEYS, "name", "config", "description", "search_space", "num_samples", "dataset")
# An offline experiment's `dataset`: the online experiment file whose policy records it, the
# rows, and the share recorded by an untrained policy (`tunerl.offline.recording`).
_DATASET_KEYS = ("expert", "rows", "random_fraction")
_TARGET_KEYS = ("metric", "min")
DEFAULT_NUM_SAMPLES = 8


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
    num_samples: int = DEFAULT_NUM_SAMPLES
    path: Path | None = field(default=None, repr=False)
    dataset: dict[str, Any] | None = None

    @property
    def target_metric(self) -> str:
        return self.target["metric"]

    @property
    def target_value(self) -> float:
        return float(self.target["min"])

    @property
    def target_stop(self) -> dict[str, float]:
        """The target as a stop criterion, `{metric: min}`."""
        return {self.target_metric: self.target_value}

    def search_space(self) -> SearchSpace:
        """The experiment's search space (a file named relative to the experiment's folder
        or its parent): the experiment's config under the space's own fixed fields (which
        are set for the sweep), and the experiment's stop criteria."""
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
        data = read_yaml(found, SearchSpaceError)
        if isinstance(data, dict) and isinstance(data.get("config") or {}, dict):
            for key in ("algo", "env"):
                if key in data and data[key] != getattr(self, key):
                    raise ConfigError(
                        f"{self.path or self.name}: its search_space {found} is for {key} "
                        f"{data[key]!r}, the experiment for {getattr(self, key)!r}."
                    )
            data = {
                **data,
                "name": self.name,
                "config": {**self.config, **(data.get("config") or {})},
                "stop": dict(self.stop),
            }
        return search_space_from_dict(data, found)

    def algo_config(self, **overrides: Any) -> AlgorithmConfig:
        """The experiment's config, with `overrides` (e.g. `seed=3`) on top."""
        return default_config(self.algo, self.env).update_from_dict({**self.config, **overrides})


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Reads and checks an experiment file; errors name the file and the key."""
    return experiment_from_dict(read_yaml(path, ConfigError), Path(path))


def experiment_from_dict(data: Any, path: Path | None = None) -> Experiment:
    """Checks an experiment given as a dict (what a YAML file holds); `path` names the file
    in error messages."""
    where = path or "experiment"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: an experiment file must be a mapping, got {type(data)}.")
    for key in data:
        if key not in _KEYS:
            raise ConfigError(
                f"{where}: unknown key {key!r}; allowed: {sorted(_KEYS)}.{closest(key, _KEYS)}"
            )
    for key in _REQUIRED_KEYS:
        if key not in data:
            raise ConfigError(f"{where}: missing key {key!r}.")
    try:
        algorithm_class(data["algo"])
    except ConfigError as error:
        raise ConfigError(f"{where}: algo: {error}") from None
    stop = data["stop"]
    if not isinstance(stop, dict) or not all(is_number(v) for v in stop.values()):
        raise ConfigError(f"{where}: stop needs a mapping of result key: number, got {stop!r}.")
    stop = check_stop(stop, where=f"{where}: stop.")
    target = data["target"]
    if (
        not isinstance(target, dict)
        or set(_TARGET_KEYS) - set(target)
        or not is_number(target["min"])
    ):
        raise ConfigError(
            f"{where}: target needs 'metric' (a result key) and 'min' (a number), got {target!r}."
        )
    num_samples = data.get("num_samples", DEFAULT_NUM_SAMPLES)
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ConfigError(f"{where}: num_samples must be a positive integer, got {num_samples!r}.")
    dataset = data.get("dataset")
    if dataset is not None and (
        not isinstance(dataset, dict) or set(dataset) != set(_DATASET_KEYS)
    ):
        raise ConfigError(f"{where}: dataset needs exactly {list(_DATASET_KEYS)}, got {dataset!r}.")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: config needs a mapping of field: value, got {config!r}.")
    experiment = Experiment(
        name=data.get("name", path.stem if path else "experiment"),
        algo=data["algo"],
        env=data["env"],
        config=dict(config),
        stop=dict(stop),
        target=dict(target),
        description=data.get("description", ""),
        search_space_path=data.get("search_space"),
        num_samples=num_samples,
        path=path,
        dataset=dataset,
    )
    try:
        experiment.algo_config().validate()
    except ConfigError as error:
        raise ConfigError(f"{where}: config: {error}") from None
    return experiment


def load_sweep_file(path: str | os.PathLike) -> tuple[SearchSpace, Experiment | None]:
    """What `tunerl tune FILE` sweeps, reading FILE once: a search-space file (it has
    `space`), or an experiment that names one (it has `search_space`, and is returned too)."""
    path = Path(path)
    data = read_yaml(path, SearchSpaceError)
    if isinstance(data, dict) and "space" not in data:
        if "search_space" not in data:
            raise SearchSpaceError(
                f"{path} has no 'space' (a search space) nor 'search_space' (an experiment "
                "that names one)."
            )
        experiment = experiment_from_dict(data, path)
        return experiment.search_space(), experiment
    return search_space_from_dict(data, path), None


@dataclass
class TrainingRun:
    """How `train_until` ended: the last result, the stop keys it met, and the checkpoint
    it saved (None if it was not asked to)."""

    result: dict[str, Any]
    reached: list[str]
    checkpoint_path: str | None = None


def train_until(
    config: AlgorithmConfig,
    stop: Mapping[str, float],
    *,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
) -> TrainingRun:
    """Builds the algorithm of `config` in this process and trains it until a stop criterion
    is met (Tune's dict stopper, see `reached_stop_keys`), calling `on_result` with each
    result; then saves a checkpoint to `checkpoint_path` if given, and stops the algorithm
    (also when training fails)."""
    algo = config.build_algo()
    try:
        while True:
            result = algo.train()
            if on_result is not None:
                on_result(result)
            reached = reached_stop_keys(result, stop)
            if reached:
                break
        saved = algo.save_to_path(checkpoint_path) if checkpoint_path is not None else None
    finally:
        algo.stop()
    return TrainingRun(result=result, reached=reached, checkpoint_path=saved)


def run_experiment(path: str | os.PathLike, sweep: bool = False, **overrides: Any):
    """Runs one trial of an experiment in this process until its stop criteria and returns
    the last result, with `reached_target` added; `overrides` are config fields (`seed=3`).
    With `sweep=True` (for an experiment that names a search_space) runs its sweep with Tune
    and returns the ResultGrid; `overrides` are then `run_sweep` options (`storage_path`,
    `num_samples`, `scheduler`, ...)."""
    experiment = load_experiment(path)
    if sweep:
        from tunerl.tuning.sweep import run_sweep

        options = {"num_samples": experiment.num_samples, **overrides}
        return run_sweep(experiment.search_space(), **options)
    result = train_until(experiment.algo_config(**overrides), experiment.stop).result
    result["reached_target"] = bool(reached_stop_keys(result, experiment.target_stop))
    return result
