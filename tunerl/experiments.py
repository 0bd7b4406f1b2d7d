"""Experiments as data: `experiments/*.yaml` name an algorithm, an env, its config, when to
stop, and the return the experiment must reach. The learning tests and benchmarks read them.

    algo: PPO
    env: CartPole-v1
    config: {lr: 0.001, ...}          # AlgorithmConfig fields, flat
    stop: {num_env_steps_sampled_lifetime: 100000}
    target: {metric: env_runners/episode_return_mean, min: 450}
    search_space: search_spaces/ppo_cartpole.yaml   # optional: what `tunerl tune` sweeps
    num_samples: 16                                  # optional: trials of that sweep
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunerl.core import metrics as m
from tunerl.core.config import AlgorithmConfig, ConfigError
from tunerl.tuning.search_space import (
    RESULT_KEYS,
    SearchSpaceError,
    check_stop,
    read_yaml,
    search_space_from_dict,
)

_REQUIRED_KEYS = ("algo", "env", "stop", "target")
_KEYS = (*_REQUIRED_KEYS, "name", "config", "description", "search_space", "num_samples")
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

    @property
    def target_metric(self) -> str:
        return self.target["metric"]

    @property
    def target_value(self) -> float:
        return float(self.target["min"])

    def search_space(self):
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
        from tunerl import ALGORITHMS

        config = ALGORITHMS[self.algo].get_default_config().environment(self.env)
        return config.update_from_dict({**self.config, **overrides})


def _closest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Reads and checks an experiment file; errors name the file and the key."""
    from tunerl import ALGORITHMS

    path = Path(path)
    data = read_yaml(path, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment file must be a mapping, got {type(data)}.")
    for key in data:
        if key not in _KEYS:
            raise ConfigError(
                f"{path}: unknown key {key!r}; allowed: {sorted(_KEYS)}.{_closest(key, _KEYS)}"
            )
    for key in _REQUIRED_KEYS:
        if key not in data:
            raise ConfigError(f"{path}: missing key {key!r}.")
    if data["algo"] not in ALGORITHMS:
        raise ConfigError(
            f"{path}: algo {data['algo']!r} is not one of {sorted(ALGORITHMS)}."
            f"{_closest(str(data['algo']), ALGORITHMS)}"
        )
    stop = data["stop"]
    if not isinstance(stop, dict) or not all(_is_number(v) for v in stop.values()):
        raise ConfigError(f"{path}: stop needs a mapping of result key: number, got {stop!r}.")
    stop = check_stop(stop, where=f"{path}: stop.")
    target = data["target"]
    if (
        not isinstance(target, dict)
        or set(_TARGET_KEYS) - set(target)
        or not _is_number(target["min"])
    ):
        raise ConfigError(
            f"{path}: target needs 'metric' (a result key) and 'min' (a number), got {target!r}."
        )
    num_samples = data.get("num_samples", DEFAULT_NUM_SAMPLES)
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ConfigError(f"{path}: num_samples must be a positive integer, got {num_samples!r}.")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: config needs a mapping of field: value, got {config!r}.")
    experiment = Experiment(
        name=data.get("name", path.stem),
        algo=data["algo"],
        env=data["env"],
        config=dict(config),
        stop=dict(stop),
        target=dict(target),
        description=data.get("description", ""),
        search_space_path=data.get("search_space"),
        num_samples=num_samples,
        path=path,
    )
    try:
        experiment.algo_config().validate()
    except ConfigError as error:
        raise ConfigError(f"{path}: config: {error}") from None
    return experiment


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def lookup(result: dict[str, Any], key: str) -> Any:
    """`result["env_runners"]["episode_return_mean"]` for key "env_runners/episode_return_mean"."""
    value: Any = result
    for part in key.split("/"):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def reached_stop_keys(result: dict[str, Any], stop: dict[str, float]) -> list[str]:
    """The stop keys whose value in `result` is at or beyond the limit (Tune's dict stopper
    stops when there is any). A key the result does not hold raises a ConfigError naming the
    closest key it holds, as Tune does: such a criterion could never be met. Evaluation keys
    are only in the results of evaluation iterations, so they may be missing."""
    reached = []
    for key, limit in stop.items():
        value = lookup(result, key)
        if value is None and not key.startswith(f"{m.EVALUATION_RESULTS}/"):
            keys = sorted(set(_flat_keys(result)) | set(RESULT_KEYS))
            raise ConfigError(
                f"stop key {key!r} is not in the results, so it can never be met."
                f"{_closest(key, keys)}"
            )
        if value is not None and value == value and value >= limit:
            reached.append(key)
    return reached


def should_stop(result: dict[str, Any], stop: dict[str, float]) -> bool:
    """Tune's dict stopper: any metric at or beyond its value (see `reached_stop_keys`)."""
    return bool(reached_stop_keys(result, stop))


def _flat_keys(result: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for name, value in result.items():
        if isinstance(value, dict):
            keys.extend(_flat_keys(value, f"{prefix}{name}/"))
        elif name != "config":
            keys.append(f"{prefix}{name}")
    return keys


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
