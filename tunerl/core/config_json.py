"""A config as JSON values, for checkpoints: classes by import path, a module spec by its
parts; and back, under the rules of `class_resolution.resolve_class` (nothing named in a file
is imported or called)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tunerl.core import class_resolution, multi_agent, spaces_json
from tunerl.core.callbacks import Callbacks
from tunerl.core.checkpoint_io import CheckpointError
from tunerl.core.config import AlgorithmConfig, ConfigError
from tunerl.core.learner import Learner
from tunerl.core.rl_module import MultiRLModuleSpec, RLModule, RLModuleSpec
from tunerl.env.registry import env_from_checkpoint
from tunerl.policy.policy import PolicySpec

if TYPE_CHECKING:
    from tunerl.core.algorithm import Algorithm

_CLASS_KEY = "__class__"
_SPEC_KEY = "__rl_module_spec__"
_MULTI_SPEC_KEY = "__multi_rl_module_spec__"
_POLICY_SPECS_KEY = "__policy_specs__"
# Functions (a policy mapping, policies_to_train) are code: a checkpoint names them for the
# error message only, and never gets one back.
_FUNCTION_KEY = "__function__"
# Config fields that may name a class in a checkpoint, and the base it must have.
_CLASS_FIELDS: dict[str, type] = {"callbacks_class": Callbacks, "learner_class": Learner}


def config_to_json(config: AlgorithmConfig) -> dict[str, Any]:
    """The config as JSON values: classes by import path, a module spec by its parts,
    PolicySpecs with their spaces; a policy mapping function by its name only."""
    out: dict[str, Any] = {}
    for name, value in config.to_dict().items():
        if isinstance(value, type):
            value = {_CLASS_KEY: class_resolution.class_path(value)}
        elif isinstance(value, RLModuleSpec):
            value = {_SPEC_KEY: _spec_to_json(value)}
        elif isinstance(value, MultiRLModuleSpec):
            specs = value.module_specs
            value = {_MULTI_SPEC_KEY: {mid: _spec_to_json(spec) for mid, spec in specs.items()}}
        elif name in _FUNCTION_FIELDS and callable(value):
            value = {_FUNCTION_KEY: getattr(value, "__qualname__", repr(value))}
        elif name == "policies" and value is not None:
            value = _policies_to_json(value)
        elif callable(value):
            raise ConfigError(
                f"Config field {name} holds {value!r}, which a checkpoint cannot name: register "
                "it with tunerl.register_env(name, creator) and pass the name instead."
            )
        out[name] = value
    return out


_FUNCTION_FIELDS = ("policy_mapping_fn", "policies_to_train")


def _spec_to_json(spec: RLModuleSpec) -> dict[str, Any]:
    path = spec.load_state_path
    return {
        "module_class": spec.module_class and class_resolution.class_path(spec.module_class),
        "model_config": spec.model_config,
        "load_state_path": None if path is None else os.fspath(path),
    }


def _policies_to_json(policies: Any) -> Any:
    if not isinstance(policies, dict):
        return sorted(policies)
    specs = multi_agent.policy_specs_of(policies)
    return {
        _POLICY_SPECS_KEY: {
            module_id: {
                "observation_space": spec.observation_space
                and spaces_json.space_to_json(spec.observation_space),
                "action_space": spec.action_space and spaces_json.space_to_json(spec.action_space),
                "config": spec.config,
            }
            for module_id, spec in specs.items()
        }
    }


def _policies_from_json(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return value
    specs = value.get(_POLICY_SPECS_KEY) if isinstance(value, dict) else None
    if not isinstance(specs, dict):
        raise CheckpointError(
            f"{where} must be a list of module ids or PolicySpecs; got {value!r}."
        )
    out = {}
    for module_id, spec in specs.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict | None):
            raise CheckpointError(f"{where}.{module_id} must be a PolicySpec object; got {spec!r}.")
        spaces = {
            key: spec.get(key)
            and spaces_json.space_from_json(spec[key], f"{where}.{module_id}.{key}")
            for key in ("observation_space", "action_space")
        }
        out[module_id] = PolicySpec(config=spec["config"], **spaces)
    return out


def config_from_json(
    algo_class: type[Algorithm],
    data: Any,
    where: str,
    allow_import: Sequence[str] = (),
    overrides: dict[str, Any] | None = None,
) -> AlgorithmConfig:
    """The config `config_to_json` wrote. Classes resolve only as
    `class_resolution.resolve_class` allows (nothing is imported unless `allow_import` says so);
    `env` only to a Gymnasium id or a `register_env` name (nothing named in the file is
    called). `where` names the file, for errors."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: 'config' must be an object, not {type(data).__name__}.")
    values: dict[str, Any] = {}
    functions: dict[str, str] = {}
    overrides = dict(overrides or {})
    for name, value in data.items():
        field = f"{where}: config.{name}"
        if name == "env":
            value = env_from_checkpoint(value, field)
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
            value = _spec_from_json(value[_SPEC_KEY], field, allow_import)
        elif isinstance(value, dict) and _MULTI_SPEC_KEY in value:
            specs = value[_MULTI_SPEC_KEY]
            if not isinstance(specs, dict):
                raise CheckpointError(f"{field} must map module ids to specs; got {specs!r}.")
            value = MultiRLModuleSpec(
                rl_module_specs={
                    mid: _spec_from_json(spec, f"{field}.{mid}", allow_import)
                    for mid, spec in specs.items()
                }
            )
        elif isinstance(value, dict) and _FUNCTION_KEY in value:
            functions[name] = value[_FUNCTION_KEY]
            continue
        elif name == "policies" and value is not None:
            value = _policies_from_json(value, field)
        values[name] = value
    missing = sorted(set(functions) - set(overrides))
    if missing:
        names = ", ".join(f"{name}={functions[name]}" for name in missing)
        raise CheckpointError(
            f"{where}: the run was configured with {names}, a function, which a checkpoint "
            "does not store (loading one would run code named in a file). Pass it again: "
            f"from_checkpoint(path, config_overrides={{{missing[0]!r}: your_function}})."
        )
    values.update(overrides)
    try:
        return algo_class.get_default_config().update_from_dict(values)
    except ConfigError as error:
        raise CheckpointError(f"{where}: {error}") from None


def _spec_from_json(spec: Any, field: str, allow_import: Sequence[str]) -> RLModuleSpec:
    if not isinstance(spec, dict) or not isinstance(spec.get("model_config"), dict | None):
        raise CheckpointError(
            f"{field} must hold 'module_class' and a 'model_config' object; got {spec!r}."
        )
    module_class = spec.get("module_class") and class_resolution.resolve_class(
        spec["module_class"], RLModule, f"{field}.module_class", allow_import
    )
    path = spec.get("load_state_path")
    if not isinstance(path, str | None):
        raise CheckpointError(f"{field}.load_state_path must be a path or null; got {path!r}.")
    return RLModuleSpec(
        module_class=module_class, model_config=spec["model_config"], load_state_path=path
    )
