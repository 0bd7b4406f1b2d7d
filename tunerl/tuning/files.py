"""What the files people write for tunerl have in common when they are read: search spaces,
experiments, and the command line's `--config` and `--stop`. One home for reading YAML,
for keys nested in dicts ("model_config/fcnet_hiddens", "env_runners/episode_return_mean"),
for the config of "algorithm X on env Y", and for the "Did you mean" of every message.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tunerl.core.config import ConfigError

if TYPE_CHECKING:
    from tunerl.core.algorithm import Algorithm
    from tunerl.core.config import AlgorithmConfig

# "model_config/fcnet_hiddens": a key inside a dict-valued config field, or a result key
# inside its section ("env_runners/episode_return_mean").
PATH_SEPARATOR = "/"
# How close (difflib ratio, case ignored) a name must be to a valid one to be suggested.
CLOSEST_CUTOFF = 0.5


def closest(name: str, candidates: Iterable[str], cutoff: float = CLOSEST_CUTOFF) -> str:
    """`" Did you mean 'lr'?"` for the candidate closest to `name` (case ignored), or ""."""
    by_folded = {str(candidate).lower(): str(candidate) for candidate in candidates}
    close = difflib.get_close_matches(str(name).lower(), list(by_folded), n=1, cutoff=cutoff)
    return f" Did you mean {by_folded[close[0]]!r}?" if close else ""


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (YAML's `true` is not a learning rate)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_value(value: Any) -> str:
    """A config value as a ranking table or a trial folder shows it: floats to 4 digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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


def get_path(source: Mapping, name: str, default: Any = None) -> Any:
    """The value at "model_config/fcnet_hiddens" in nested dicts, or `default`."""
    value: Any = source
    for part in name.split(PATH_SEPARATOR):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return value


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


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"model_config/fcnet_hiddens": x} -> {"model_config": {"fcnet_hiddens": x}}."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        set_path(nested, name, value)
    return nested


def algorithm_class(name: Any) -> type[Algorithm]:
    """The registered algorithm called `name`; a ConfigError naming the registered ones (and
    the closest) otherwise."""
    from tunerl import ALGORITHMS

    if name not in ALGORITHMS:
        raise ConfigError(
            f"algorithm {name!r} is not one of {sorted(ALGORITHMS)}."
            f"{closest(str(name), ALGORITHMS)}"
        )
    return ALGORITHMS[name]


def default_config(algo: str, env: Any) -> AlgorithmConfig:
    """The default config of algorithm `algo` on `env`, before any field a file sets."""
    return algorithm_class(algo).get_default_config().environment(env)
