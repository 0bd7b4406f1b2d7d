"""AlgorithmConfig: every setting of an algorithm, grouped in RLlib's sections.

Its fields are what every algorithm reads (`tunerl.core.fields.BASE_FIELDS`: env, runners,
gamma, evaluation, resources, fault tolerance, ...); an algorithm's config adds the shared
groups it reads (SGD_FIELDS, REPLAY_FIELDS, ...) and its own. Section methods
(`.training(lr=...)`) set fields and check them at once; `validate()` adds the checks that
involve several fields. Values may be Ray Tune search spaces (`tune.loguniform(1e-4, 1e-2)`,
`tune.grid_search([...])`): they are checked when Tune has resolved them, in the trial.
"""

from __future__ import annotations

import copy
import difflib
import math
import typing
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ray.tune.tune import _Config

from tunerl.core.fields import (
    BASE_FIELDS,
    BaseFields,
    ConfigError,
    Field,
    is_search_space,
)
from tunerl.core.rl_module.multi_rl_module import MultiRLModuleSpec

if TYPE_CHECKING:
    from tunerl.core.algorithm import Algorithm

_UNSET = object()
_Self = TypeVar("_Self", bound="AlgorithmConfig")
# What a custom module class sets to list the model_config keys it reads; without it, a
# custom module's model_config keys are not checked.
MODEL_CONFIG_KEYS_ATTRIBUTE = "model_config_keys"


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' Did you mean ...?' naming the closest of `candidates`: a similar spelling, else the
    names that hold `name` as a word ('lr': 'actor_lr', 'critic_lr'); '' if there is none."""
    candidates = sorted(candidates)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    close = close or [c for c in candidates if name in c.split("_") and c != name]
    if not close:
        return ""
    if len(close) == 1:
        return f" Did you mean {close[0]!r}?"
    return f" Did you mean one of {', '.join(repr(c) for c in close)}?"


class AlgorithmConfig(BaseFields, _Config):
    """Settings of an algorithm; `PPOConfig` and friends add the fields they read.

    Works as a Tune `param_space` (Tune calls `to_dict()`), and `Algorithm(config=dict)`
    reads the dict back with `from_dict()`. A field another algorithm has but this one does
    not read is an unknown field here, refused with the closest name.
    """

    algo_class: type[Algorithm] | None = None
    FIELDS: ClassVar[dict[str, Field]] = dict(BASE_FIELDS)

    def __init__(self, algo_class: type[Algorithm] | None = None):
        if algo_class is not None:
            self.algo_class = algo_class
        for name, f in self.FIELDS.items():
            object.__setattr__(self, name, copy.deepcopy(f.default))
        self._frozen = False

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """{field: static type}, from the annotations of the class and its bases (forward
        references resolved); a field without an annotation is missing."""
        import gymnasium as gym

        from tunerl.core.algorithm import Algorithm
        from tunerl.core.callbacks import Callbacks
        from tunerl.core.learner import Learner
        from tunerl.core.rl_module import MultiRLModuleSpec, RLModuleSpec
        from tunerl.policy.policy import PolicySpec

        names = dict(gym=gym, Algorithm=Algorithm, Callbacks=Callbacks, Learner=Learner)
        names.update(RLModuleSpec=RLModuleSpec, MultiRLModuleSpec=MultiRLModuleSpec)
        hints = typing.get_type_hints(cls, localns={**names, "PolicySpec": PolicySpec})
        return {name: hints[name] for name in cls.FIELDS if name in hints}

    # ----------------------------------------------------------------- setting fields
    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name == "algo_class":
            object.__setattr__(self, name, value)
            return
        if getattr(self, "_frozen", False):
            raise ConfigError(
                f"This config is frozen (an algorithm was built from it); use config.copy() "
                f"to change {name!r}."
            )
        self._set(name, value, section=None)

    def _set(self, name: str, value: Any, section: str | None) -> None:
        given = name
        name = self._canonical_name(name, section)
        f = self.FIELDS[name]
        # An old name is accepted from the section it used to live in (RLlib's
        # `.training(model=...)` sets today's `.rl_module(model_config=...)`).
        if section is not None and f.section != section and given not in self.DEPRECATED_NAMES:
            raise ConfigError(
                f"{type(self).__name__}.{section}() has no field {name!r}: it belongs to "
                f".{f.section}({name}=...)."
            )
        if not is_search_space(value):
            problem = f.problem(value)
            if problem is not None:
                raise ConfigError(self._message(name, value, problem))
        object.__setattr__(self, name, value)

    def _message(self, name: str, value: Any, problem: str) -> str:
        f = self.FIELDS[name]
        rule = "" if f.check is not None else f"; {name} must be {f.rule()}"
        where = f"{type(self).__name__}.{f.section}({name}={value!r})"
        return f"{where}: {problem}{rule}. ({name}: {f.doc})"

    def _canonical_name(self, name: str, section: str | None) -> str:
        if name in self.SPELLINGS:
            return self.SPELLINGS[name]
        new_name = self.DEPRECATED_NAMES.get(name)
        if name not in self.FIELDS and new_name in self.FIELDS:
            return new_name
        if name not in self.FIELDS:
            in_section = [n for n, f in self.FIELDS.items() if f.section == section]
            hint = did_you_mean(name, in_section) or did_you_mean(name, self.FIELDS)
            where = f".{section}()" if section else ""
            raise ConfigError(f"{type(self).__name__}{where} got an unknown field {name!r}.{hint}")
        return name

    def _update(self: _Self, section: str, kwargs: dict[str, Any]) -> _Self:
        if self._frozen:
            raise ConfigError("This config is frozen; use config.copy() to change it.")
        renamed = {k: self.DEPRECATED_NAMES[k] for k in kwargs if k in self.DEPRECATED_NAMES}
        if renamed:
            new = ", ".join(f"{old} -> {new}" for old, new in renamed.items())
            message = f"Deprecated config names, please rename: {new}."
            warnings.warn(message, DeprecationWarning, stacklevel=3)
        values = {name: value for name, value in kwargs.items() if value is not _UNSET}
        probe = copy.copy(self)
        for name, value in values.items():  # all checked before any is set
            probe._set(name, value, section)
        for name, value in values.items():
            self._set(name, value, section)
        return self

    # ------------------------------------------------------------------------ sections
    def environment(self: _Self, env: Any = _UNSET, **kwargs: Any) -> _Self:
        """env, env_config, normalize_actions, clip_actions, disable_env_checking."""
        return self._update("environment", {"env": env, **kwargs})

    def env_runners(self: _Self, **kwargs: Any) -> _Self:
        """num_env_runners, num_envs_per_env_runner, rollout_fragment_length, explore, ..."""
        return self._update("env_runners", kwargs)

    def training(self: _Self, **kwargs: Any) -> _Self:
        """gamma, train_batch_size_per_learner, grad_clip, learner_class, the algorithm's."""
        return self._update("training", kwargs)

    def evaluation(self: _Self, **kwargs: Any) -> _Self:
        """evaluation_interval, evaluation_duration(_unit), evaluation_num_env_runners,
        evaluation_config, evaluation_parallel_to_training."""
        if "evaluation_config" in kwargs and isinstance(kwargs["evaluation_config"], dict):
            self._check_overrides(kwargs["evaluation_config"])
        return self._update("evaluation", kwargs)

    def rl_module(self: _Self, **kwargs: Any) -> _Self:
        """model_config, rl_module_spec."""
        return self._update("rl_module", kwargs)

    def multi_agent(self: _Self, **kwargs: Any) -> _Self:
        """policies, policy_mapping_fn, policies_to_train, count_steps_by (RLlib's names)."""
        return self._update("multi_agent", kwargs)

    @property
    def is_multi_agent(self) -> bool:
        """True when `.multi_agent(policies=...)` named the modules (a MultiAgentEnv without
        them trains one shared module)."""
        return self.policies is not None

    def resources(self: _Self, **kwargs: Any) -> _Self:
        """num_cpus_for_main_process, placement_strategy."""
        return self._update("resources", kwargs)

    def learners(self: _Self, **kwargs: Any) -> _Self:
        """num_learners, num_gpus_per_learner."""
        return self._update("learners", kwargs)

    def debugging(self: _Self, **kwargs: Any) -> _Self:
        """seed, log_level."""
        return self._update("debugging", kwargs)

    def fault_tolerance(self: _Self, **kwargs: Any) -> _Self:
        """restart_failed_env_runners, max_num_env_runner_restarts, ignore_env_runner_failures,
        restart_failed_sub_environments."""
        return self._update("fault_tolerance", kwargs)

    def callbacks(self: _Self, callbacks_class: Any = _UNSET) -> _Self:
        """A tunerl.Callbacks subclass (called at init, after sampling, with every result)."""
        return self._update("callbacks", {"callbacks_class": callbacks_class})

    def offline_data(self: _Self, **kwargs: Any) -> _Self:
        """output, output_max_rows_per_file, output_compress_columns (every algorithm);
        input_ and the reading fields (the offline algorithms)."""
        return self._update("offline_data", kwargs)

    def reporting(self: _Self, **kwargs: Any) -> _Self:
        """metrics_num_episodes_for_smoothing, min_time_s_per_iteration,
        min_sample_timesteps_per_iteration."""
        return self._update("reporting", kwargs)

    # ----------------------------------------------------------------- whole config
    def _check_overrides(self, overrides: dict) -> None:
        for name, value in overrides.items():
            self.copy()._set(name, value, section=None)

    def validate(self) -> None:
        """Raises ConfigError if a value, or a combination of values, is not allowed."""
        for name, f in self.FIELDS.items():
            value = getattr(self, name)
            if is_search_space(value):
                raise ConfigError(
                    f"{name} holds a Tune search space ({value!r}); run it with tune.Tuner, "
                    "which resolves it, or give a single value to build an algorithm."
                )
            problem = f.problem(value)
            if problem is not None:
                raise ConfigError(self._message(name, value, problem))
        self._check_model_config_keys()
        self._check_multi_agent()
        if self.env is None and not (
            self.env_runner_cls is not None
            and self.observation_space is not None
            and self.action_space is not None
        ):
            raise ConfigError(
                f"{type(self).__name__} has no env: call .environment('CartPole-v1') or "
                "another Gymnasium id, a registered name or a gymnasium.Env subclass (or, for "
                "external clients, .env_runners(env_runner_cls=ExternalEnvRunner) and "
                ".environment(observation_space=..., action_space=...))."
            )
        if "minibatch_size" in self.FIELDS and (
            self.minibatch_size > self.train_batch_size_per_learner
        ):
            raise ConfigError(
                f"minibatch_size={self.minibatch_size} is larger than "
                f"train_batch_size_per_learner={self.train_batch_size_per_learner}; it must "
                "be at most the train batch."
            )
        if "rollout_fragment_length" in self.FIELDS:  # not in the offline algorithms'
            self.get_rollout_fragment_length()  # refuses 'auto' where it has no meaning
        self._check_overrides(self.evaluation_config)
        if self.offline_evaluation_interval and (
            self.offline_evaluation_input is None and getattr(self, "input_", None) is None
        ):
            raise ConfigError(
                f"offline_evaluation_interval={self.offline_evaluation_interval} needs recorded "
                "episodes to estimate on, but offline_evaluation_input is None and there is no "
                "offline_data(input_=...): give .evaluation(offline_evaluation_input=...) a "
                "folder of Parquet files, a glob or a list of files."
            )
        if self.evaluation_parallel_to_training and self.evaluation_num_env_runners == 0:
            raise ConfigError(
                "evaluation_parallel_to_training=True needs remote evaluation runners, but "
                "evaluation_num_env_runners=0: an evaluation in the algorithm's own process "
                "cannot run while it trains. Set .evaluation(evaluation_num_env_runners=1) "
                "or more, or evaluation_parallel_to_training=False to evaluate after training."
            )

    def _check_multi_agent(self) -> None:
        from tunerl.core.multi_agent import module_ids, module_overrides, override_problem

        ids = module_ids(self)
        for module_id in ids:
            for name, value in module_overrides(self, module_id).items():
                problem = override_problem(self, module_id, name, value)
                if problem:
                    raise ConfigError(f"{type(self).__name__}.multi_agent(): {problem}.")
        chosen = self.policies_to_train
        if chosen is not None and not callable(chosen):
            unknown = sorted(set(chosen) - set(ids))
            if unknown:
                raise ConfigError(
                    f"{type(self).__name__}.multi_agent(policies_to_train={chosen!r}) names "
                    f"{unknown}, which are not modules; the modules are {ids}."
                )
        if isinstance(self.rl_module_spec, MultiRLModuleSpec) and self.policies is not None:
            extra = sorted(set(self.rl_module_spec.module_specs) - set(ids))
            if extra:
                raise ConfigError(
                    f"{type(self).__name__}.rl_module(rl_module_spec=MultiRLModuleSpec(...)) "
                    f"has specs for {extra}, which .multi_agent(policies=...) does not name; "
                    f"the modules are {ids}."
                )

    def model_config_keys(self, module_class: type | None = None) -> set[str] | None:
        """The model_config keys a module of `module_class` reads, None if any key is
        allowed: the default modules' (`DEFAULT_MODEL_CONFIG` and this config's default
        model_config); for a custom class, those and its `model_config_keys` (a custom class
        that does not list them is not checked)."""
        from tunerl.core.rl_module import DEFAULT_MODEL_CONFIG

        keys = set(DEFAULT_MODEL_CONFIG) | set(self.FIELDS["model_config"].default)
        if module_class is None:
            return keys
        declared = getattr(module_class, MODEL_CONFIG_KEYS_ATTRIBUTE, None)
        return None if declared is None else keys | set(declared)

    def _user_specs(self) -> dict[str, Any]:
        """{where: RLModuleSpec} of the user's module specs (one, or one per module id)."""
        spec = self.rl_module_spec
        if isinstance(spec, MultiRLModuleSpec):
            return {
                f"rl_module_spec.rl_module_specs[{mid!r}]": one
                for mid, one in spec.module_specs.items()
            }
        return {"rl_module_spec": spec} if spec is not None else {}

    def _check_model_config_keys(self) -> None:
        specs = self._user_specs()
        classes = [spec.module_class for spec in specs.values()] or [None]
        for where, spec in [("", None), *specs.items()]:
            if spec is None:
                # The shared model_config goes to every module: checked against each class.
                checks = [("model_config", self.model_config, cls) for cls in classes]
            else:
                checks = [(f"{where}.model_config", spec.model_config or {}, spec.module_class)]
            for where_key, model_config, module_class in checks:
                self._check_keys(where_key, model_config, self.model_config_keys(module_class))

    def _check_keys(self, where: str, model_config: dict, allowed: set[str] | None) -> None:
        for key, value in model_config.items():
            if is_search_space(value):
                raise ConfigError(
                    f"{where}[{key!r}] holds a Tune search space ({value!r}); run it with "
                    "tune.Tuner, which resolves it, or give a single value."
                )
            if allowed is not None and key not in allowed:
                raise ConfigError(
                    f"{type(self).__name__}.rl_module({where}={{{key!r}: ...}}): unknown "
                    f"key {key!r}; the module reads {sorted(allowed)}."
                    f"{did_you_mean(key, allowed)} (A custom module_class lists the keys "
                    f"it reads in a class attribute {MODEL_CONFIG_KEYS_ATTRIBUTE}.)"
                )

    def copy(self: _Self, copy_frozen: bool = False) -> _Self:
        """A deep copy, unfrozen unless `copy_frozen`."""
        new = copy.deepcopy(self)
        if not copy_frozen:
            object.__setattr__(new, "_frozen", False)
        return new

    def freeze(self) -> None:
        self._frozen = True

    def with_overrides(self: _Self, overrides: dict) -> _Self:
        """A copy with some fields replaced (how `evaluation_config` is applied)."""
        new = self.copy()
        for name, value in overrides.items():
            new._set(name, value, section=None)
        return new

    # ---------------------------------------------------------------- dict round trip
    def to_dict(self) -> dict[str, Any]:
        """Flat {field: value}, RLlib's layout; what Tune resolves as a param_space."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self.FIELDS}

    def update_from_dict(self: _Self, config: dict[str, Any]) -> _Self:
        for name, value in config.items():
            if name.startswith("__"):
                continue
            if name in self.DEPRECATED_NAMES and name not in self.FIELDS:
                warnings.warn(
                    f"Deprecated config name {name!r}: use {self.DEPRECATED_NAMES[name]!r}.",
                    DeprecationWarning,
                    stacklevel=2,
                )
            self._set(name, value, section=None)
        return self

    @classmethod
    def from_dict(cls: type[_Self], config: dict[str, Any]) -> _Self:
        return cls().update_from_dict(config)

    def get(self, name: str, default: Any = None) -> Any:
        """Dict-style read (old RLlib code and Tune read configs this way)."""
        return getattr(self, name, default) if name in self.FIELDS else default

    def __getitem__(self, name: str) -> Any:
        if name not in self.FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        changed = {
            name: getattr(self, name)
            for name, f in self.FIELDS.items()
            if getattr(self, name) != f.default
        }
        body = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}({body})"

    # ------------------------------------------------------- quantities derived from fields
    @classmethod
    def replays_experience(cls) -> bool:
        """True when this algorithm's learner updates replay transitions from a buffer (its
        config composes REPLAY_FIELDS); False when they train on env steps sampled for them."""
        return "replay_buffer_config" in cls.FIELDS

    def get_rollout_fragment_length(self) -> int:
        """Steps each sub-env takes in one `EnvRunner.sample()` without arguments: the
        field, or for 'auto' the train batch split evenly over every runner's sub-envs
        (RLlib's rule). 'auto' raises ConfigError for an algorithm that replays."""
        if self.rollout_fragment_length != "auto":
            return self.rollout_fragment_length
        if self.replays_experience():
            name, default = type(self).__name__, self.FIELDS["rollout_fragment_length"].default
            raise ConfigError(
                f"{name}.env_runners(rollout_fragment_length='auto'): 'auto' splits the train "
                "batch over the runners' sub-envs, which fits algorithms that train on the "
                f"env steps they just sampled. {name} replays: train_batch_size_per_learner="
                f"{self.train_batch_size_per_learner} counts transitions replayed per update, "
                "and between two rounds of updates every sub-env takes rollout_fragment_length "
                "steps. Give that number as an integer (1: update after every env step; "
                f"{name}'s default: {default!r})."
            )
        num_envs = self.num_envs_per_env_runner * max(1, self.num_env_runners)
        return math.ceil(self.train_batch_size_per_learner / num_envs)

    def env_steps_per_sample(self) -> int:
        """Env steps one runner's `sample()` without arguments takes: the rollout fragment
        on each of its sub-envs."""
        return self.get_rollout_fragment_length() * self.num_envs_per_env_runner

    def env_steps_per_round(self, num_runners: int | None = None) -> int:
        """Env steps of one `sample()` on every runner: `num_runners` (default
        num_env_runners; 0 is the local runner, which counts as one) x env_steps_per_sample."""
        runners = self.num_env_runners if num_runners is None else num_runners
        return self.env_steps_per_sample() * max(1, runners)

    def needs_new_runners(self, built: AlgorithmConfig) -> bool:
        """True when env runners built from the config `built` cannot run this one: a field
        marked `rebuilds_runners` has another value (every other field is read at each use,
        so `EnvRunnerGroup.set_config` is enough)."""
        return any(
            getattr(self, name) != getattr(built, name, _UNSET)
            for name, f in self.FIELDS.items()
            if f.rebuilds_runners
        )

    # ------------------------------------------------------------------------ building
    def build_algo(self) -> Algorithm:
        """Validates the config and builds its algorithm."""
        if self.algo_class is None:
            raise ConfigError(f"{type(self).__name__} has no algo_class to build.")
        return self.algo_class(config=self.copy())

    # =================================================== RLlib compatibility: old names
    # Names RLlib scripts still use, each mapped to today's; nothing else depends on them.
    DEPRECATED_NAMES: ClassVar[dict[str, str]] = {
        "num_rollout_workers": "num_env_runners",
        "num_envs_per_worker": "num_envs_per_env_runner",
        "num_cpus_per_worker": "num_cpus_per_env_runner",
        "num_gpus_per_worker": "num_gpus_per_env_runner",
        "evaluation_num_workers": "evaluation_num_env_runners",
        "num_sgd_iter": "num_epochs",
        "sgd_minibatch_size": "minibatch_size",
        "train_batch_size": "train_batch_size_per_learner",
        "vf_clip_param": "vf_loss_clip",
        "model": "model_config",
        "recreate_failed_workers": "restart_failed_env_runners",
    }
    # Spellings that are simply accepted (Python keywords cannot be keyword arguments).
    SPELLINGS: ClassVar[dict[str, str]] = {"lambda": "lambda_"}

    def rollouts(self: _Self, **kwargs: Any) -> _Self:
        """Old name of `env_runners()` (num_rollout_workers -> num_env_runners)."""
        warnings.warn(
            "config.rollouts(...) is deprecated: use config.env_runners(...) (and "
            "num_env_runners instead of num_rollout_workers).",
            DeprecationWarning,
            stacklevel=2,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._update("env_runners", kwargs)

    def build(self) -> Algorithm:
        """Old name of `build_algo()`."""
        return self.build_algo()
