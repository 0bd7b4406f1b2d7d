"""A config as JSON values, for checkpoints: classes by import path, a module spec by its
parts; and back, under the rules of `class_resolution.resolve_class` (nothing named in a file
is imported or called)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from tunerl.core import class_resolution, spaces_json
from tunerl.core.callbacks import Callbacks
from tunerl.core.checkpoint_io import CheckpointError
from tunerl.core.config import AlgorithmConfig, ConfigError
from tunerl.core.learner import Learner
from tunerl.core.rl_module import RLModule, RLModuleSpec
from tunerl.env.registry import env_from_checkpoint

if TYPE_CHECKING:
    from tunerl.core.algorithm import Algorithm

_CLASS_KEY = "__class__"
_SPEC_KEY = "__rl_module_spec__"
_SPACE_KEY = "__space__"
# Config fields that may name a class in a checkpoint, and the base it must have
# (env_runner_cls: any class already imported; its field's check then refuses a class that
# is not an env runner, before anything is built).
_CLASS_FIELDS: dict[str, type] = {
    "callbacks_class": Callbacks,
    "learner_class": Learner,
    "env_runner_cls": object,
}


def config_to_json(config: AlgorithmConfig) -> dict[str, Any]:
    """The config as JSON values: classes by import path, a module spec by its parts."""
    out: dict[str, Any] = {}
    for name, value in config.to_dict().items():
        if isinstance(value, type):
            value = {_CLASS_KEY: class_resolution.class_path(value)}
        elif isinstance(value, gym.Space):
            value = {_SPACE_KEY: spaces_json.space_to_json(value)}
        elif isinstance(value, RLModuleSpec):
            value = {
                _SPEC_KEY: {
                    "module_class": value.module_class
                    and class_resolution.class_path(value.module_class),
                    "model_config": value.model_config,
                }
            }
        elif callable(value):
            raise ConfigError(
                f"Config field {name} holds {value!r}, which a checkpoint cannot name: register "
                "it with tunerl.register_env(name, creator) and pass the name instead."
            )
        out[name] = value
    return out


def config_from_json(
    algo_class: type[Algorithm],
    data: Any,
    where: str,
    allow_import: Sequence[str] = (),
) -> AlgorithmConfig:
    """The config `config_to_json` wrote. Classes resolve only as
    `class_resolution.resolve_class` allows (nothing is imported unless `allow_import` says so);
    `env` only to a Gymnasium id or a `register_env` name (nothing named in the file is
    called). `where` names the file, for errors."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: 'config' must be an object, not {type(data).__name__}.")
    values = {}
    for name, value in data.items():
        field = f"{where}: config.{name}"
        if name == "env":
            value = env_from_checkpoint(value, field)
        elif isinstance(value, dict) and set(value) == {_SPACE_KEY}:
            value = spaces_json.space_from_json(value[_SPACE_KEY])
        elif isinstance(value, dict) and _CLASS_KEY in value:
            if name not in _CLASS_FIELDS:
                raise CheckpointError(
                    f"{field} names a class ({value[_CLASS_KEY]!r}); a checkpoint may name "
                    f"classes only in {sorted(_CLASS_FIELDS)} and the module spec."
                )
            value = class_resolution.resolve_class(
                value[_CLASS_KEY], _CLASS_FIELDS[name], field, allow_import
            )
        elif isinstance(value, dict) and _SPEC_KEY in value:
            spec = value[_SPEC_KEY]
            if not isinstance(spec, dict) or not isinstance(spec.get("model_config"), dict | None):
                raise CheckpointError(
                    f"{field} must hold 'module_class' and a 'model_config' object; got {spec!r}."
                )
            module_class = spec.get("module_class") and class_resolution.resolve_class(
                spec["module_class"], RLModule, f"{field}.module_class", allow_import
            )
            value = RLModuleSpec(module_class=module_class, model_config=spec["model_config"])
        values[name] = value
    try:
        return algo_class.get_default_config().update_from_dict(values)
    except ConfigError as error:
        raise CheckpointError(f"{where}: {error}") from None
