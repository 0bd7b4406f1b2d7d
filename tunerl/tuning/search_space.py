"""Search spaces: the language in which a YAML file declares distributions by config field,
and what it becomes for Tune and Optuna. `search_space_file.py` reads and checks the files.

    algo: PPO
    env: CartPole-v1
    metric: env_runners/episode_return_mean     # optional; this is the default
    mode: max
    config:                                     # fixed fields of every trial
      num_envs_per_env_runner: 16
    stop:                                       # optional; Tune's stop criteria
      num_env_steps_sampled_lifetime: 100000
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

A conditional field (`when`) is searched only in trials whose config holds the given values;
in the others it keeps its fixed value. A condition names a fixed field or a searched field
declared above it (Optuna draws fields in file order).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunerl.core.config import AlgorithmConfig
from tunerl.core.metrics import EPISODE_RETURN_MEAN_KEY
from tunerl.tuning.files import default_config, get_path, is_number, nest, set_path

UNIFORM, LOGUNIFORM, RANDINT, CHOICE, GRID = "uniform", "loguniform", "randint", "choice", "grid"
DISTRIBUTIONS = (UNIFORM, LOGUNIFORM, RANDINT, CHOICE, GRID)
# Distributions given as [low, high] rather than as a list of values.
RANGE_DISTRIBUTIONS = (UNIFORM, LOGUNIFORM, RANDINT)
CONDITION_KEY = "when"
MODES = ("max", "min")
# Optuna's categorical distribution holds only these; other choices go through JSON text.
_OPTUNA_SCALARS = (type(None), bool, int, float, str)


@dataclass
class Param:
    """One searched field: `name` ("lr", or "model_config/fcnet_hiddens"), its
    distribution and arguments, and the condition under which it is searched."""

    name: str
    distribution: str
    args: list[Any]
    when: dict[str, Any] = field(default_factory=dict)

    @property
    def bounds(self) -> tuple[float, float]:
        """[low, high] of a range distribution (both included)."""
        return self.args[0], self.args[1]

    def tune_domain(self):
        from ray import tune

        if self.distribution == UNIFORM:
            return tune.uniform(*self.bounds)
        if self.distribution == LOGUNIFORM:
            return tune.loguniform(*self.bounds)
        if self.distribution == RANDINT:
            low, high = self.bounds
            return tune.randint(low, high + 1)  # Tune's upper bound is exclusive
        if self.distribution == CHOICE:
            return tune.choice(self.args)
        return tune.grid_search(self.args)

    def suggest(self, trial) -> Any:
        """Draws this parameter from an Optuna trial."""
        if self.distribution == UNIFORM:
            return trial.suggest_float(self.name, *self.bounds)
        if self.distribution == LOGUNIFORM:
            return trial.suggest_float(self.name, *self.bounds, log=True)
        if self.distribution == RANDINT:
            return trial.suggest_int(self.name, *self.bounds)
        if _optuna_scalars(self.args):
            return trial.suggest_categorical(self.name, self.args)
        text = trial.suggest_categorical(self.name, [json.dumps(v) for v in self.args])
        return json.loads(text)

    def allows(self, value: Any) -> bool:
        """True if `value` is one this parameter can take."""
        if self.distribution in RANGE_DISTRIBUTIONS:
            low, high = self.bounds
            if self.distribution == RANDINT and not isinstance(value, int):
                return False
            return is_number(value) and low <= value <= high
        return value in self.args


def _optuna_scalars(values: list[Any]) -> bool:
    return all(isinstance(v, _OPTUNA_SCALARS) for v in values)


@dataclass
class SearchSpace:
    """A checked search space: the algorithm and env, the fixed config, the searched
    parameters, the metric to optimize, stop criteria and points to try first."""

    algo: str
    env: str
    params: list[Param]
    config: dict[str, Any] = field(default_factory=dict)
    metric: str = EPISODE_RETURN_MEAN_KEY
    mode: str = "max"
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)
    stop: dict[str, float] = field(default_factory=dict)
    name: str | None = None
    path: Path | None = None

    @property
    def has_grid(self) -> bool:
        return any(p.distribution == GRID for p in self.params)

    def base_config(self) -> AlgorithmConfig:
        """The algorithm config with the fixed fields, before any searched value."""
        return default_config(self.algo, self.env).update_from_dict(copy.deepcopy(self.config))

    def to_tune(self) -> dict[str, Any]:
        """A Tune param space: the full config dict with Tune domains in the searched
        fields (conditional fields through `tune.sample_from`)."""
        from ray import tune

        space = self.base_config().to_dict()
        for param in self.params:
            if param.when:
                default = copy.deepcopy(get_path(space, param.name))
                domain = tune.sample_from(ConditionalSampler(param, default))
            else:
                domain = param.tune_domain()
            set_path(space, param.name, domain)
        return space

    def to_optuna(self) -> Callable[[Any], dict[str, Any]]:
        """A define-by-run function for `OptunaSearch(space=...)`: suggests each parameter
        whose condition holds, and returns the decoded values (which override the raw
        suggestions in the trial's config)."""
        base = self.base_config().to_dict()
        fixed = {
            key: get_path(base, key)
            for param in self.params
            for key in param.when
            if key not in self.param_names
        }
        return DefineByRun(list(self.params), fixed)

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def points_for_optuna(self) -> list[dict[str, Any]]:
        """`points_to_evaluate` as Optuna enqueues them (JSON text for non-scalar choices)."""
        by_name = {p.name: p for p in self.params}
        encoded = []
        for point in self.points_to_evaluate:
            row = {}
            for name, value in point.items():
                param = by_name[name]
                scalar = param.distribution in RANGE_DISTRIBUTIONS or _optuna_scalars(param.args)
                row[name] = value if scalar else json.dumps(value)
            encoded.append(row)
        return encoded

    def points_for_tune(self) -> list[dict[str, Any]]:
        """`points_to_evaluate` as Tune's variant generator takes them (nested dicts)."""
        return [nest(point) for point in self.points_to_evaluate]


@dataclass
class DefineByRun:
    """A picklable define-by-run function (Tune saves the searcher with the experiment).
    `fixed` holds the values of the non-searched fields that conditions name."""

    params: list[Param]
    fixed: dict[str, Any] = field(default_factory=dict)

    def __call__(self, trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in self.params:
            known = {**self.fixed, **values}
            if all(key in known and known[key] == want for key, want in param.when.items()):
                values[param.name] = param.suggest(trial)
        return values


@dataclass
class ConditionalSampler:
    """A picklable `tune.sample_from` function: the parameter's distribution where its
    condition holds in the trial's resolved config, else the field's fixed value."""

    param: Param
    default: Any

    def __call__(self, spec) -> Any:
        for key, want in self.param.when.items():
            if get_path(spec.config, key) != want:
                return copy.deepcopy(self.default)
        return self.param.tune_domain().sample(None)
