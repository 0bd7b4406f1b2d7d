"""What `.multi_agent(...)` means, in one place: the modules a config has, the module each
agent acts with, which modules are trained, and each module's own spec and overrides.

A single-agent config is the multi-agent one with one module, `default_policy`, that every
agent maps to; a MultiAgentEnv without `policies` is trained that way too (parameter
sharing).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

import gymnasium as gym

from tunerl.core.columns import DEFAULT_MODULE_ID
from tunerl.core.rl_module import MultiRLModuleSpec, RLModuleSpec
from tunerl.core.rl_module.multi_rl_module import check_module_id
from tunerl.policy.policy import PolicySpec


class MultiAgentError(ValueError):
    """A multi-agent setup that cannot work: an unknown module id, an agent without spaces."""


def check_policies(value: Any) -> str | None:
    """Field check of `policies`: a set, list or tuple of module ids, or a dict of module id
    -> PolicySpec (or None, or RLlib's `(policy_class, obs_space, action_space, config)`)."""
    if isinstance(value, str) or not isinstance(value, Collection):
        return (
            f"wrong type {type(value).__name__}; give a set or list of module ids, or a dict "
            "of module id -> PolicySpec"
        )
    if not value:
        return "no module ids given; give at least one"
    for module_id in value:
        try:
            check_module_id(module_id)
        except ValueError as error:
            return str(error)
        if isinstance(value, dict):
            spec = value[module_id]
            if spec is not None and not isinstance(spec, PolicySpec | tuple | list):
                return (
                    f"policies[{module_id!r}] is a {type(spec).__name__}; give a "
                    "PolicySpec(observation_space=..., action_space=..., config=...) or None"
                )
            if isinstance(spec, tuple | list) and len(spec) != 4:
                return f"policies[{module_id!r}]={spec!r}: a tuple must have 4 entries"
    return None


def check_policies_to_train(value: Any) -> str | None:
    if callable(value):
        return None
    if isinstance(value, str) or not isinstance(value, Collection):
        return (
            f"wrong type {type(value).__name__}; give a set or list of module ids, or a "
            "function (module_id, batch) -> bool"
        )
    return None


def check_mapping(value: Any) -> str | None:
    """Field check of `policy_mapping_fn`: a function, or a dict {agent_id: module_id}."""
    if callable(value):
        return None
    if isinstance(value, dict):
        bad = [module_id for module_id in value.values() if not isinstance(module_id, str)]
        return f"the module ids {bad} are not strings" if bad else None
    return (
        f"{value!r} is neither a function (agent_id, episode) -> module id nor a dict "
        "{agent_id: module_id}"
    )


def policy_specs(config: Any) -> dict[str, PolicySpec]:
    """`{module_id: PolicySpec}` of `config.policies`; one `default_policy` without them."""
    return policy_specs_of(config.policies)


def policy_specs_of(policies: Any) -> dict[str, PolicySpec]:
    """`{module_id: PolicySpec}` of a `policies` value (a collection of ids or a dict)."""
    if policies is None:
        return {DEFAULT_MODULE_ID: PolicySpec()}
    if not isinstance(policies, dict):
        return {module_id: PolicySpec() for module_id in sorted(policies)}
    specs = {}
    for module_id, spec in policies.items():
        if spec is None:
            spec = PolicySpec()
        elif isinstance(spec, tuple | list):
            spec = PolicySpec(*spec)
        if spec.policy_class is not None:
            raise MultiAgentError(
                f"policies[{module_id!r}] names the policy class {spec.policy_class!r}; "
                "tunerl trains RLModules: give the module class with .rl_module(rl_module_spec="
                "MultiRLModuleSpec(rl_module_specs={id: RLModuleSpec(module_class=...)}))."
            )
        specs[module_id] = spec
    return specs


def module_ids(config: Any) -> list[str]:
    """The module ids `config` trains with, in a fixed order."""
    return list(policy_specs(config))


def default_policy_mapping_fn(agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
    """RLlib's default: every agent acts with `default_policy`."""
    del agent_id, episode, kwargs
    return DEFAULT_MODULE_ID


def map_agent_to_module(config: Any, agent_id: Any, episode: Any, known_ids: Iterable[str]) -> str:
    """The module `agent_id` acts with in `episode`: `policy_mapping_fn(agent_id, episode)`;
    without one, the only module, else `default_policy`. Raises MultiAgentError naming the
    agent, the id returned and the known ids when the id is not one of them."""
    known = list(known_ids)
    mapping_fn: Callable[..., Any] | dict | None = config.policy_mapping_fn
    if mapping_fn is None:
        module_id = known[0] if len(known) == 1 else DEFAULT_MODULE_ID
    elif isinstance(mapping_fn, dict):
        # A dict from a file or checkpoint has string keys; agent ids may be ints (0, 1).
        module_id = mapping_fn.get(agent_id, mapping_fn.get(str(agent_id)))
        if module_id is None:
            raise MultiAgentError(
                f"policy_mapping_fn (a dict) has no module for agent {agent_id!r}; it maps "
                f"{sorted(map(str, mapping_fn))}. Add the agent, or give a function."
            )
    else:
        module_id = mapping_fn(agent_id, episode)
    if module_id not in known:
        raise MultiAgentError(
            f"policy_mapping_fn mapped agent {agent_id!r} to the module id {module_id!r}, "
            f"which is not one of the modules {known}; return one of them, or add "
            f"{module_id!r} to .multi_agent(policies=...)."
        )
    return module_id


def is_trained(config: Any, module_id: str, batch: Any = None) -> bool:
    """Whether `policies_to_train` lets the learner update `module_id` (all modules when it
    is None; a function is called as `fn(module_id, batch)`)."""
    chosen = config.policies_to_train
    if chosen is None:
        return True
    if callable(chosen):
        return bool(chosen(module_id, batch))
    return module_id in chosen


def user_module_spec(config: Any, module_id: str) -> RLModuleSpec | None:
    """The spec the user gave for `module_id`: its entry of a MultiRLModuleSpec, or the one
    RLModuleSpec (which then applies to every module)."""
    spec = config.rl_module_spec
    if isinstance(spec, MultiRLModuleSpec):
        specs = spec.module_specs
        if module_id not in specs and config.policies is not None:
            raise MultiAgentError(
                f"rl_module_spec (a MultiRLModuleSpec) has no spec for module {module_id!r}; "
                f"it has {sorted(specs)} and .multi_agent(policies=...) names "
                f"{module_ids(config)}."
            )
        return specs.get(module_id)
    return spec


def module_overrides(config: Any, module_id: str) -> dict[str, Any]:
    """Config values that differ for `module_id`: its PolicySpec's `config` (none for a
    module the policies do not name, e.g. one added to a learner directly)."""
    spec = policy_specs(config).get(module_id)
    return dict(spec.config or {}) if spec is not None else {}


# Training fields the algorithm reads for all modules at once (how much to sample, replay and
# when to update), so a module cannot have its own value; every other training field is read
# by the learner while it sets up or updates that module, and may differ per module.
SHARED_TRAINING_FIELDS = frozenset(
    {
        "train_batch_size_per_learner",
        "learner_class",
        "replay_buffer_config",
        "n_step",
        "num_steps_sampled_before_learning_starts",
        "training_intensity",
        "store_buffer_in_checkpoints",
        "target_network_update_freq",
        "learner_queue_size",
        "broadcast_interval",
    }
)


def override_problem(config: Any, module_id: str, name: str, value: Any) -> str | None:
    """What is wrong with PolicySpec(config={name: value}) of `module_id`, or None."""
    if name == "model_config":
        return None if isinstance(value, dict) else "model_config must be a dict"
    field = config.FIELDS.get(name)
    per_module = sorted(
        n
        for n, f in config.FIELDS.items()
        if f.section == "training" and n not in SHARED_TRAINING_FIELDS
    )
    if field is None or field.section != "training" or name in SHARED_TRAINING_FIELDS:
        why = "is not a field of this config" if field is None else "is shared by all modules"
        return (
            f"policies[{module_id!r}].config[{name!r}] {why}; a module may override "
            f"model_config and {per_module}"
        )
    if name == "gamma" and config.replays_experience():
        return (
            f"policies[{module_id!r}].config['gamma']: the replay buffer discounts n-step "
            "returns with the algorithm's gamma, so it is shared by all modules"
        )
    problem = field.problem(value)
    return f"policies[{module_id!r}].config[{name!r}]={value!r}: {problem}" if problem else None


def module_config(config: Any, module_id: str) -> Any:
    """The config the learner uses for `module_id`: `config` with the module's overrides
    (itself when it has none)."""
    overrides = {
        k: v for k, v in module_overrides(config, module_id).items() if k != "model_config"
    }
    return config.with_overrides(overrides) if overrides else config


def module_spaces(config: Any, env: Any) -> dict[str, tuple[gym.Space, gym.Space]]:
    """`{module_id: (observation_space, action_space)}` for a MultiAgentEnv: a PolicySpec's
    or MultiRLModuleSpec's spaces, else those of the first of `env.possible_agents` mapped
    to the module (RLlib maps with `episode=None` here)."""
    ids = module_ids(config)
    found: dict[str, tuple[gym.Space, gym.Space]] = {}
    agents = list(getattr(env, "possible_agents", None) or getattr(env, "agents", []))
    for agent_id in agents:
        module_id = map_agent_to_module(config, agent_id, None, ids)
        if module_id not in found:
            found[module_id] = (
                env.get_observation_space(agent_id),
                env.get_action_space(agent_id),
            )
    spaces = {}
    for module_id, spec in policy_specs(config).items():
        user = user_module_spec(config, module_id) or RLModuleSpec()
        obs_space = spec.observation_space or user.observation_space
        action_space = spec.action_space or user.action_space
        if module_id in found:
            obs_space = obs_space or found[module_id][0]
            action_space = action_space or found[module_id][1]
        if obs_space is None or action_space is None:
            raise MultiAgentError(
                f"No agent of {type(env).__name__} (possible_agents {agents}) maps to module "
                f"{module_id!r} through policy_mapping_fn, so its spaces are unknown; give "
                "them: policies={" + repr(module_id) + ": PolicySpec(observation_space=..., "
                "action_space=...)}."
            )
        spaces[module_id] = (obs_space, action_space)
    return spaces
