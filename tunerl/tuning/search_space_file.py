"""Reading a search-space file (see `search_space.py` for the language): every rule the file
must follow, checked before a trial starts, each error naming the file, the key and the rule
(`space.lr.loguniform: bounds must be > 0`), with the closest valid name where there is one.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

from tunerl.core.config import AlgorithmConfig, ConfigError, Field
from tunerl.core.metrics import EPISODE_RETURN_MEAN_KEY
from tunerl.tuning.files import (
    PATH_SEPARATOR,
    algorithm_class,
    closest,
    default_config,
    is_number,
    read_yaml,
    set_path,
)
from tunerl.tuning.search_space import (
    CHOICE,
    CONDITION_KEY,
    DISTRIBUTIONS,
    GRID,
    LOGUNIFORM,
    MODES,
    RANDINT,
    RANGE_DISTRIBUTIONS,
    Param,
    SearchSpace,
)
from tunerl.tuning.stopping import check_stop

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


class SearchSpaceError(ConfigError):
    """A search-space file that declares something impossible; says where and what."""


def _fail(path: Path | None, where: str, message: str) -> SearchSpaceError:
    location = f"{path}: " if path else ""
    return SearchSpaceError(f"{location}{where}: {message}")


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
        raise _fail(path, where, f"unknown config field {head!r}.{closest(head, fields)}")
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
            f"{closest(str(distribution), DISTRIBUTIONS)}",
        )
    if not isinstance(args, list) or not args:
        raise _fail(path, where, f"needs a non-empty list, got {args!r}.")
    if distribution in RANGE_DISTRIBUTIONS:
        if len(args) != 2 or not all(is_number(a) and math.isfinite(a) for a in args):
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
                    f"condition on unknown field {key!r}.{closest(key, candidates)}",
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
                    f"not a searched field; searched: {sorted(by_name)}.{closest(name, by_name)}",
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


def _check_stop(stop: Any, path: Path | None) -> dict[str, float]:
    try:
        return check_stop(stop)
    except ConfigError as error:
        location = f"{path}: " if path else ""
        raise SearchSpaceError(f"{location}{error}") from None


def load_search_space(path: str | os.PathLike) -> SearchSpace:
    """Reads and checks a search-space file; every error names the file, the key and the
    rule broken."""
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"Search-space file {path} does not exist.")
    return search_space_from_dict(read_yaml(path, SearchSpaceError), path)


def search_space_from_dict(data: Any, path: Path | None = None) -> SearchSpace:
    """Checks a search space given as a dict (what a YAML file holds); `path` names the file
    in error messages."""
    from tunerl.env.registry import EnvError, resolve_env_creator

    if not isinstance(data, dict):
        raise _fail(path, "top level", f"expected a mapping, got {type(data).__name__}.")
    for key in data:
        if key not in _FILE_KEYS:
            raise _fail(
                path,
                str(key),
                f"unknown key; allowed: {sorted(_FILE_KEYS)}.{closest(str(key), _FILE_KEYS)}",
            )
    for key in _REQUIRED_KEYS:
        if key not in data:
            raise _fail(path, "top level", f"missing key {key!r}.")
    algo = data["algo"]
    try:
        fields = algorithm_class(algo).config_class.FIELDS
    except ConfigError as error:
        raise _fail(path, "algo", str(error)) from None
    try:
        resolve_env_creator(data["env"])
    except EnvError as error:
        raise _fail(path, "env", str(error)) from None
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise _fail(path, "config", f"needs a mapping of field: value, got {config!r}.")
    try:
        base = default_config(algo, data["env"]).update_from_dict(copy.deepcopy(config))
    except ConfigError as error:
        raise _fail(path, "config", str(error)) from None
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
