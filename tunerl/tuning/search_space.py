"""Search spaces as data: a YAML file declares distributions by config field.

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
import difflib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray.tune.result import TIME_THIS_ITER_S, TIME_TOTAL_S, TRAINING_ITERATION

from tunerl.core import metrics as m
from tunerl.core.config import AlgorithmConfig, ConfigError, Field
from tunerl.core.metrics import EPISODE_RETURN_MEAN_KEY

UNIFORM, LOGUNIFORM, RANDINT, CHOICE, GRID = "uniform", "loguniform", "randint", "choice", "grid"
DISTRIBUTIONS = (UNIFORM, LOGUNIFORM, RANDINT, CHOICE, GRID)
# Distributions given as [low, high] rather than as a list of values.
RANGE_DISTRIBUTIONS = (UNIFORM, LOGUNIFORM, RANDINT)
CONDITION_KEY = "when"
MODES = ("max", "min")
# "model_config/fcnet_hiddens": a key inside a dict-valued config field.
PATH_SEPARATOR = "/"
_REQUIRED_KEYS = ("algo", "env", "space")
_FILE_KEYS = (
    *_REQUIRED_KEYS,
    "name",
    "description",
    "metric",
    "mode",
    "config",
    "stop",
    "points_to_evaluate",
)
logger = logging.getLogger("tunerl")
# Optuna's categorical distribution holds only these; other choices go through JSON text.
_OPTUNA_SCALARS = (type(None), bool, int, float, str)


_EPISODE_STATS = (
    m.EPISODE_RETURN_MEAN,
    m.EPISODE_RETURN_MAX,
    m.EPISODE_RETURN_MIN,
    m.EPISODE_LEN_MEAN,
    m.NUM_EPISODES,
    m.NUM_ENV_STEPS_SAMPLED,
)
# Result keys that count how far a run got: stop criteria on them are budgets (caps), the
# others are targets.
BUDGET_KEYS = (
    TRAINING_ITERATION,
    m.NUM_ENV_STEPS_SAMPLED_LIFETIME,
    m.NUM_ENV_STEPS_TRAINED_LIFETIME,
    m.NUM_EPISODES_LIFETIME,
    TIME_TOTAL_S,
)
# Every result key tunerl reports, besides those under `learners/` and `timers/`, whose
# names depend on the algorithm and module (and keys that callbacks add).
RESULT_KEYS = (
    *BUDGET_KEYS,
    TIME_THIS_ITER_S,
    "time_since_restore",
    "iterations_since_restore",
    m.ENV_STEPS_PER_S,
    *(f"{m.ENV_RUNNER_RESULTS}/{stat}" for stat in _EPISODE_STATS),
    *(f"{m.EVALUATION_RESULTS}/{m.ENV_RUNNER_RESULTS}/{stat}" for stat in _EPISODE_STATS),
    f"{m.FAULT_TOLERANCE}/{m.NUM_HEALTHY_ENV_RUNNERS}",
    f"{m.FAULT_TOLERANCE}/{m.NUM_ENV_RUNNER_RESTARTS}",
)
# RLlib's names (old API stack and `rllib train` examples) of keys tunerl reports as others.
RLLIB_RESULT_KEYS = {
    "episode_reward_mean": m.EPISODE_RETURN_MEAN_KEY,
    "episode_reward_max": f"{m.ENV_RUNNER_RESULTS}/{m.EPISODE_RETURN_MAX}",
    "episode_reward_min": f"{m.ENV_RUNNER_RESULTS}/{m.EPISODE_RETURN_MIN}",
    "episode_len_mean": f"{m.ENV_RUNNER_RESULTS}/{m.EPISODE_LEN_MEAN}",
    "env_runners/episode_reward_mean": m.EPISODE_RETURN_MEAN_KEY,
    "evaluation/episode_reward_mean": m.EVALUATION_RETURN_MEAN_KEY,
    "evaluation/env_runners/episode_reward_mean": m.EVALUATION_RETURN_MEAN_KEY,
    "timesteps_total": m.NUM_ENV_STEPS_SAMPLED_LIFETIME,
    "num_env_steps_sampled": m.NUM_ENV_STEPS_SAMPLED_LIFETIME,
    "episodes_total": m.NUM_EPISODES_LIFETIME,
}
_OPEN_RESULT_SECTIONS = (f"{m.LEARNER_RESULTS}/", f"{m.TIMERS}/")
# How close (difflib ratio) an unknown key must be to a known one to be taken for a typo of
# it; a key further from all of them may be one a callback adds, and is checked in the run.
_TYPO_CUTOFF = 0.8


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
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if self.distribution == RANDINT and not isinstance(value, int):
                return False
            return number and low <= value <= high
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


def set_path(target: dict, name: str, value: Any) -> None:
    """`target["model_config"]["fcnet_hiddens"] = value` for "model_config/fcnet_hiddens",
    copying the dicts on the way so a shared default is never changed."""
    head, _, rest = name.partition(PATH_SEPARATOR)
    if not rest:
        target[head] = value
        return
    inner = dict(target.get(head) or {})
    set_path(inner, rest, value)
    target[head] = inner


def get_path(source: Mapping, name: str, default: Any = None) -> Any:
    """The value at "model_config/fcnet_hiddens" in nested dicts, or `default`."""
    value: Any = source
    for part in name.split(PATH_SEPARATOR):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return value


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"model_config/fcnet_hiddens": x} -> {"model_config": {"fcnet_hiddens": x}}."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        set_path(nested, name, value)
    return nested


def _closest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def _fail(path: Path | None, where: str, message: str) -> SearchSpaceError:
    location = f"{path}: " if path else ""
    return SearchSpaceError(f"{location}{where}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(base: AlgorithmConfig, name: str, value: Any) -> str | None:
    """None if the config field `name` accepts `value`, else the config's own message."""
    probe = base.copy()
    try:
        if PATH_SEPARATOR in name:
            # Inside a dict field: the dict with this value in it, checked as a whole (a
            # model_config key the module does not read is refused by validate()).
            head, _, rest = name.partition(PATH_SEPARATOR)
            inner = copy.deepcopy(getattr(probe, head)) or {}
            set_path(inner, rest, value)
            probe.update_from_dict({head: inner})
            probe.validate()
        else:
            probe.update_from_dict({name: value})
    except ConfigError as error:
        return str(error)
    return None


def _check_param(
    name: str, spec: Any, fields: dict[str, Field], base: AlgorithmConfig, path: Path | None
) -> Param:
    where = f"space.{name}"
    head = name.partition(PATH_SEPARATOR)[0]
    if head not in fields:
        raise _fail(path, where, f"unknown config field {head!r}.{_closest(head, list(fields))}")
    if PATH_SEPARATOR in name and not isinstance(fields[head].default, dict):
        dict_fields = sorted(n for n, f in fields.items() if isinstance(f.default, dict))
        raise _fail(
            path,
            where,
            f"{head!r} is not a dict field; only {dict_fields} take 'field/key' names.",
        )
    if not isinstance(spec, dict):
        raise _fail(
            path, where, f"expected a mapping like {{loguniform: [1e-4, 1e-2]}}, got {spec!r}."
        )
    spec = dict(spec)
    when = spec.pop(CONDITION_KEY, None) or {}
    if len(spec) != 1:
        raise _fail(
            path,
            where,
            f"needs exactly one of {list(DISTRIBUTIONS)} (plus an optional "
            f"{CONDITION_KEY!r}), got {sorted(spec)}.",
        )
    distribution, args = next(iter(spec.items()))
    where = f"{where}.{distribution}"
    if distribution not in DISTRIBUTIONS:
        raise _fail(
            path,
            f"space.{name}",
            f"unknown distribution {distribution!r}; allowed: {list(DISTRIBUTIONS)}."
            f"{_closest(str(distribution), list(DISTRIBUTIONS))}",
        )
    if not isinstance(args, list) or not args:
        raise _fail(path, where, f"needs a non-empty list, got {args!r}.")
    if distribution in RANGE_DISTRIBUTIONS:
        if len(args) != 2 or not all(_is_number(a) and math.isfinite(a) for a in args):
            raise _fail(path, where, f"needs [low, high], two finite numbers, got {args!r}.")
        low, high = args
        if not low < high:
            raise _fail(path, where, f"low {low!r} must be below high {high!r}.")
        if distribution == LOGUNIFORM and low <= 0:
            raise _fail(path, where, f"bounds must be > 0 (it samples the log), got {args!r}.")
        if distribution == RANDINT and not all(isinstance(a, int) for a in args):
            raise _fail(path, where, f"bounds must be integers, got {args!r}.")
        types = fields[head].types if PATH_SEPARATOR not in name else ()
        if distribution != RANDINT and types and float not in types:
            raise _fail(
                path, where, f"{name} takes integers; use randint: [{low}, {high}] instead."
            )
    elif distribution == GRID and when:
        raise _fail(path, where, f"a grid field cannot have a {CONDITION_KEY!r} condition.")
    for value in args:
        problem = _check_value(base, name, value)
        if problem is not None:
            raise _fail(path, where, f"value {value!r} is not allowed: {problem}")
    if not isinstance(when, dict):
        raise _fail(
            path, f"space.{name}.{CONDITION_KEY}", f"needs a mapping of field: value, got {when!r}."
        )
    return Param(name, distribution, list(args), dict(when))


def _check_conditions(params: list[Param], fields: dict[str, Field], path: Path | None) -> None:
    seen: set[str] = set()
    names = {p.name for p in params}
    for param in params:
        where = f"space.{param.name}.{CONDITION_KEY}"
        for key in param.when:
            if key == param.name:
                raise _fail(path, where, "a field cannot be conditioned on itself.")
            if key in names and key not in seen:
                raise _fail(
                    path,
                    where,
                    f"condition on {key!r}, which is searched below it; declare {key!r} first.",
                )
            if key not in names and key.partition(PATH_SEPARATOR)[0] not in fields:
                candidates = sorted(names | set(fields))
                raise _fail(
                    path,
                    where,
                    f"condition on unknown field {key!r}.{_closest(key, candidates)}",
                )
        seen.add(param.name)


def _check_points(points: Any, params: list[Param], path: Path | None) -> list[dict[str, Any]]:
    if not isinstance(points, list):
        raise _fail(path, "points_to_evaluate", f"needs a list of mappings, got {points!r}.")
    by_name = {p.name: p for p in params}
    for i, point in enumerate(points):
        where = f"points_to_evaluate[{i}]"
        if not isinstance(point, dict):
            raise _fail(path, where, f"needs a mapping of field: value, got {point!r}.")
        for name, value in point.items():
            if name not in by_name:
                raise _fail(
                    path,
                    f"{where}.{name}",
                    f"not a searched field; searched: {sorted(by_name)}."
                    f"{_closest(name, list(by_name))}",
                )
            param = by_name[name]
            if not param.allows(value):
                allowed = param.args if param.distribution in (CHOICE, GRID) else param.bounds
                raise _fail(
                    path,
                    f"{where}.{name}",
                    f"{value!r} is outside the field's {param.distribution} {allowed!r}.",
                )
    return list(points)


def check_stop(stop: Any, where: str = "stop.") -> dict[str, float]:
    """Stop criteria `{result key: number}` as Tune and `tunerl train` take them: values
    finite numbers, RLlib's key names mapped to tunerl's (with a warning), and a key that is
    a near miss of a result key refused with the closest one. Messages name each key as
    `where` + key ("stop.lr" in a file, "--stop lr" on the command line)."""
    if not isinstance(stop, Mapping):
        raise ConfigError(
            f"{where.rstrip('. ')}: needs a mapping of result key: number, got {stop!r}."
        )
    checked: dict[str, float] = {}
    for key, value in stop.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}{key!r}: not a result key.")
        if not _is_number(value) or not math.isfinite(value):
            raise ConfigError(
                f"{where}{key}: needs a finite number, got {value!r} (a NaN or inf criterion "
                "can never be met)."
            )
        if key in RLLIB_RESULT_KEYS:
            logger.warning(
                "%s%s is RLlib's name of a key tunerl reports as %s; stopping on that.",
                where,
                key,
                RLLIB_RESULT_KEYS[key],
            )
            key = RLLIB_RESULT_KEYS[key]
        elif key not in RESULT_KEYS and not key.startswith(_OPEN_RESULT_SECTIONS):
            close = difflib.get_close_matches(key, RESULT_KEYS, n=1, cutoff=_TYPO_CUTOFF)
            if close:
                raise ConfigError(f"{where}{key}: not a result key. Did you mean {close[0]!r}?")
        checked[key] = value
    return checked


def _check_stop(stop: Any, path: Path | None) -> dict[str, float]:
    try:
        return check_stop(stop)
    except ConfigError as error:
        location = f"{path}: " if path else ""
        raise SearchSpaceError(f"{location}{error}") from None


def yaml_error_message(path: str | os.PathLike, error: yaml.YAMLError) -> str:
    """One line for a YAML error: `file:line:column: not valid YAML: what (where it began)`."""
    mark = getattr(error, "problem_mark", None)
    location = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and context_mark:
        problem += f" ({context} at line {context_mark.line + 1})"
    return f"{location}: not valid YAML: {problem}."


def read_yaml(path: str | os.PathLike, error: type[ConfigError] = ConfigError) -> Any:
    """The data of a YAML file (safe_load: plain data, no Python objects); a missing file
    or a syntax error raises `error` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file.")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as problem:
        raise error(yaml_error_message(path, problem)) from None


def load_search_space(path: str | os.PathLike) -> SearchSpace:
    """Reads and checks a search-space file; every error names the file, the key and the
    rule broken."""
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"Search-space file {path} does not exist.")
    return search_space_from_dict(read_yaml(path, SearchSpaceError), path)


def search_space_from_dict(
    data: Any, path: Path | None = None, algorithms: Mapping[str, type] | None = None
) -> SearchSpace:
    """Checks a search space given as a dict (what a YAML file holds); `path` names the file
    in error messages."""
    from tunerl.env.registry import EnvError, resolve_env_creator

    if algorithms is None:
        from tunerl import ALGORITHMS as algorithms
    if not isinstance(data, dict):
        raise _fail(path, "top level", f"expected a mapping, got {type(data).__name__}.")
    for key in data:
        if key not in _FILE_KEYS:
            raise _fail(
                path,
                str(key),
                f"unknown key; allowed: {sorted(_FILE_KEYS)}."
                f"{_closest(str(key), list(_FILE_KEYS))}",
            )
    for key in _REQUIRED_KEYS:
        if key not in data:
            raise _fail(path, "top level", f"missing key {key!r}.")
    algo = data["algo"]
    if algo not in algorithms:
        raise _fail(
            path,
            "algo",
            f"{algo!r} is not one of {sorted(algorithms)}.{_closest(str(algo), list(algorithms))}",
        )
    try:
        resolve_env_creator(data["env"])
    except EnvError as error:
        raise _fail(path, "env", str(error)) from None
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise _fail(path, "config", f"needs a mapping of field: value, got {config!r}.")
    try:
        base = algorithms[algo].get_default_config().environment(data["env"])
        base.update_from_dict(copy.deepcopy(config))
    except ConfigError as error:
        raise _fail(path, "config", str(error)) from None
    fields = algorithms[algo].config_class.FIELDS
    space = data["space"]
    if not isinstance(space, dict) or not space:
        raise _fail(path, "space", "needs at least one field: {lr: {loguniform: [...]}, ...}.")
    params = [_check_param(str(name), spec, fields, base, path) for name, spec in space.items()]
    _check_conditions(params, fields, path)
    mode = data.get("mode", "max")
    if mode not in MODES:
        raise _fail(path, "mode", f"must be one of {list(MODES)}, got {mode!r}.")
    metric = data.get("metric", EPISODE_RETURN_MEAN_KEY)
    if not isinstance(metric, str) or not metric:
        raise _fail(path, "metric", f"needs a result key such as {EPISODE_RETURN_MEAN_KEY!r}.")
    return SearchSpace(
        algo=algo,
        env=data["env"],
        params=params,
        config=dict(config),
        metric=metric,
        mode=mode,
        points_to_evaluate=_check_points(data.get("points_to_evaluate") or [], params, path),
        stop=_check_stop(data.get("stop") or {}, path),
        name=data.get("name"),
        path=path,
    )
