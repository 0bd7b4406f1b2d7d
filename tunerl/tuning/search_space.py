"""Search spaces as data: a YAML file declares distributions by config field.

    algo: PPO
    env: CartPole-v1
    metric: env_runners/episode_return_mean     # optional; this is the default
    mode: max
    config:                                     # fixed fields of every trial
      num_envs_per_env_runner: 16
    space:
      lr: {loguniform: [1.0e-4, 3.0e-3]}
      num_epochs: {randint: [3, 12]}            # both bounds included
      minibatch_size: {choice: [256, 512, 1024]}
      gamma: {uniform: [0.95, 0.999]}
      clip_param: {grid: [0.1, 0.2, 0.3]}       # every value, in every combination
      use_kl_loss: {choice: [false, true]}
      kl_coeff: {loguniform: [0.05, 1.0], when: {use_kl_loss: true}}   # conditional
      model_config/fcnet_hiddens: {choice: [[64, 64], [128, 128]]}     # nested field
    points_to_evaluate:                         # tried first (Optuna, random)
      - {lr: 3.0e-4, num_epochs: 10}

`to_tune()` gives a Tune param space for any search algorithm; `to_optuna()` a define-by-run
function for `OptunaSearch(space=...)`, which handles conditional fields and list-valued
choices that Optuna's own distributions cannot hold.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunerl.core.config import ConfigError
from tunerl.core.metrics import EPISODE_RETURN_MEAN_KEY

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice", "grid")
_FILE_KEYS = {
    "algo",
    "env",
    "metric",
    "mode",
    "config",
    "space",
    "points_to_evaluate",
    "description",
    "stop",
    "name",
}
# Config fields that hold dicts; a space may reach into them with "field/key".
_NESTED_FIELDS = {"model_config", "env_config", "evaluation_config"}


class SearchSpaceError(ConfigError):
    """A search-space file that declares something impossible; says where and what."""


@dataclass
class Param:
    """One searched field: `name` ("lr", or "model_config/fcnet_hiddens"), its
    distribution and arguments, and the condition under which it is searched."""

    name: str
    distribution: str
    args: list[Any]
    when: dict[str, Any] = field(default_factory=dict)

    def tune_domain(self):
        from ray import tune

        a = self.args
        if self.distribution == "uniform":
            return tune.uniform(a[0], a[1])
        if self.distribution == "loguniform":
            return tune.loguniform(a[0], a[1])
        if self.distribution == "randint":
            return tune.randint(a[0], a[1] + 1)  # Tune's upper bound is exclusive
        if self.distribution == "choice":
            return tune.choice(a)
        return tune.grid_search(a)

    def suggest(self, trial) -> Any:
        """Draws this parameter from an Optuna trial."""
        a = self.args
        if self.distribution == "uniform":
            return trial.suggest_float(self.name, a[0], a[1])
        if self.distribution == "loguniform":
            return trial.suggest_float(self.name, a[0], a[1], log=True)
        if self.distribution == "randint":
            return trial.suggest_int(self.name, a[0], a[1])
        # Optuna's categorical holds only None, bool, int, float and str: other values
        # (lists, dicts) are suggested by their JSON text and decoded.
        if all(v is None or isinstance(v, bool | int | float | str) for v in a):
            return trial.suggest_categorical(self.name, a)
        text = trial.suggest_categorical(self.name, [json.dumps(v) for v in a])
        return json.loads(text)


@dataclass
class SearchSpace:
    algo: str
    env: str
    params: list[Param]
    config: dict[str, Any] = field(default_factory=dict)
    metric: str = EPISODE_RETURN_MEAN_KEY
    mode: str = "max"
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)
    stop: dict[str, float] = field(default_factory=dict)
    path: Path | None = None

    @property
    def has_grid(self) -> bool:
        return any(p.distribution == "grid" for p in self.params)

    def base_config(self):
        """The algorithm config with the fixed fields, before any searched value."""
        from tunerl import ALGORITHMS

        config = ALGORITHMS[self.algo].get_default_config().environment(self.env)
        return config.update_from_dict(copy.deepcopy(self.config))

    def to_tune(self) -> dict[str, Any]:
        """A Tune param space: the full config dict with Tune domains in the searched
        fields (conditional fields through `tune.sample_from`)."""
        from ray import tune

        space = self.base_config().to_dict()
        for param in self.params:
            if param.when:
                default = copy.deepcopy(_get_path(space, param.name))
                domain = tune.sample_from(_conditional_sampler(param, default))
            else:
                domain = param.tune_domain()
            _set_path(space, param.name, domain)
        return space

    def to_optuna(self) -> Callable[[Any], dict[str, Any]]:
        """A define-by-run function for `OptunaSearch(space=...)`: suggests each parameter
        whose condition holds, and returns the decoded values (which override the raw
        suggestions in the trial's config)."""
        return DefineByRun(list(self.params))

    def points_for_optuna(self) -> list[dict[str, Any]]:
        """`points_to_evaluate` as Optuna enqueues them (JSON text for non-scalar choices)."""
        encoded = []
        by_name = {p.name: p for p in self.params}
        for point in self.points_to_evaluate:
            row = {}
            for name, value in point.items():
                param = by_name[name]
                scalar = value is None or isinstance(value, bool | int | float | str)
                row[name] = value if scalar or param.distribution != "choice" else json.dumps(value)
            encoded.append(row)
        return encoded

    def num_grid_points(self) -> int:
        return math.prod(len(p.args) for p in self.params if p.distribution == "grid")


@dataclass
class DefineByRun:
    """A picklable define-by-run function (Tune saves the searcher with the experiment)."""

    params: list[Param]

    def __call__(self, trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in self.params:
            if all(values.get(key) == value for key, value in param.when.items()):
                values[param.name] = param.suggest(trial)
        return values


def _conditional_sampler(param: Param, default: Any) -> Callable:
    """A `tune.sample_from` function: the parameter's distribution where its condition holds
    in the trial's resolved config, else the field's fixed value."""
    domain = param.tune_domain()

    def sample(spec) -> Any:
        for key, expected in param.when.items():
            if _get_path(spec.config, key) != expected:
                return default
        return domain.sample(None)

    return sample


def _set_path(target: dict, name: str, value: Any) -> None:
    head, _, rest = name.partition("/")
    if rest:
        target[head] = dict(target.get(head) or {})
        target[head][rest] = value
    else:
        target[head] = value


def _get_path(source: dict, name: str) -> Any:
    head, _, rest = name.partition("/")
    value = source.get(head)
    return value.get(rest) if rest and isinstance(value, dict) else value


def _fail(path: Path | None, where: str, message: str) -> SearchSpaceError:
    location = f"{path}: " if path else ""
    return SearchSpaceError(f"{location}{where}: {message}")


def _check_param(name: str, spec: Any, fields: dict, path: Path | None) -> Param:
    head = name.partition("/")[0]
    if head not in fields:
        close = difflib.get_close_matches(head, list(fields), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise _fail(path, f"space.{name}", f"unknown config field {head!r}.{hint}")
    if "/" in name and head not in _NESTED_FIELDS:
        raise _fail(
            path,
            f"space.{name}",
            f"{head!r} is not a dict field; only {sorted(_NESTED_FIELDS)} take 'field/key' names.",
        )
    if not isinstance(spec, dict):
        raise _fail(
            path,
            f"space.{name}",
            f"expected a mapping like {{loguniform: [1e-4, 1e-2]}}, got {spec!r}.",
        )
    spec = dict(spec)
    when = spec.pop("when", {}) or {}
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise _fail(
            path,
            f"space.{name}",
            f"needs exactly one of {list(DISTRIBUTIONS)} "
            f"(plus an optional 'when'), got {sorted(spec)}.",
        )
    distribution, args = next(iter(spec.items()))
    if not isinstance(args, list) or not args:
        raise _fail(path, f"space.{name}.{distribution}", f"needs a non-empty list, got {args!r}.")
    if distribution in ("uniform", "loguniform", "randint"):
        if len(args) != 2 or not all(
            isinstance(a, int | float) and not isinstance(a, bool) for a in args
        ):
            raise _fail(
                path, f"space.{name}.{distribution}", f"needs [low, high] numbers, got {args!r}."
            )
        low, high = args
        if not low < high:
            raise _fail(
                path, f"space.{name}.{distribution}", f"low {low} must be below high {high}."
            )
        if distribution == "loguniform" and low <= 0:
            raise _fail(path, f"space.{name}.loguniform", f"bounds must be > 0, got {args!r}.")
        if distribution == "randint" and not all(isinstance(a, int) for a in args):
            raise _fail(path, f"space.{name}.randint", f"bounds must be integers, got {args!r}.")
    if not isinstance(when, dict):
        raise _fail(path, f"space.{name}.when", f"needs a mapping of field: value, got {when!r}.")
    return Param(name, distribution, list(args), dict(when))


def load_search_space(path: str | os.PathLike) -> SearchSpace:
    """Reads and checks a search-space file; every error names the file, the key and the
    rule broken."""
    from tunerl import ALGORITHMS

    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"Search-space file {path} does not exist.")
    data = yaml.safe_load(path.read_text())
    return search_space_from_dict(data, path, ALGORITHMS)


def search_space_from_dict(data: Any, path: Path | None = None, algorithms=None) -> SearchSpace:
    if algorithms is None:
        from tunerl import ALGORITHMS as algorithms
    if not isinstance(data, dict):
        raise _fail(path, "top level", f"expected a mapping, got {type(data).__name__}.")
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise _fail(
            path, "top level", f"unknown keys {sorted(unknown)}; allowed: {sorted(_FILE_KEYS)}."
        )
    for key in ("algo", "env", "space"):
        if key not in data:
            raise _fail(path, "top level", f"missing key {key!r}.")
    if data["algo"] not in algorithms:
        raise _fail(path, "algo", f"{data['algo']!r} is not one of {sorted(algorithms)}.")
    fields = algorithms[data["algo"]].config_class.FIELDS
    if not isinstance(data["space"], dict) or not data["space"]:
        raise _fail(path, "space", "needs at least one field: {lr: {loguniform: [...]}, ...}.")
    params = [_check_param(name, spec, fields, path) for name, spec in data["space"].items()]
    names = {p.name for p in params}
    for param in params:
        for key in param.when:
            if key not in names and key.partition("/")[0] not in fields:
                raise _fail(
                    path, f"space.{param.name}.when", f"condition on unknown field {key!r}."
                )
    mode = data.get("mode", "max")
    if mode not in ("max", "min"):
        raise _fail(path, "mode", f"must be 'max' or 'min', got {mode!r}.")
    points = data.get("points_to_evaluate") or []
    for i, point in enumerate(points):
        missing = set(point) - names
        if missing:
            raise _fail(
                path,
                f"points_to_evaluate[{i}]",
                f"{sorted(missing)} are not searched fields ({sorted(names)}).",
            )
    space = SearchSpace(
        algo=data["algo"],
        env=data["env"],
        params=params,
        config=dict(data.get("config") or {}),
        metric=data.get("metric", EPISODE_RETURN_MEAN_KEY),
        mode=mode,
        points_to_evaluate=list(points),
        stop=dict(data.get("stop") or {}),
        path=path,
    )
    try:
        space.base_config()
    except ConfigError as error:
        raise _fail(path, "config", str(error)) from None
    return space
