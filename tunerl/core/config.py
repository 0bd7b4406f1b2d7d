"""AlgorithmConfig: every setting of an algorithm, grouped in RLlib's sections.

Each field is declared once, in `FIELDS`, with its section, default, allowed values and the
documentation `tunerl list` shows. Section methods (`.training(lr=...)`) set fields and check
them at once; `validate()` adds the checks that involve several fields. Values may be Ray Tune
search spaces (`tune.loguniform(1e-4, 1e-2)`, `tune.grid_search([...])`): they are checked
when Tune has resolved them, in the trial.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import math
import numbers
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ray.tune.tune import _Config

if TYPE_CHECKING:
    from tunerl.core.algorithm import Algorithm

_UNSET = object()


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the field, value and rule."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting: its section, default, documentation and what values it allows."""

    section: str
    default: Any
    doc: str
    types: tuple[type, ...] = ()
    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    choices: tuple | None = None
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None

    def rule(self) -> str:
        """What is allowed, in words."""
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        elif self.types:
            names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in self.types)
            parts.append(names)
            if self.low is not None:
                parts.append(f"{'>' if self.low_exclusive else '>='} {self.low:g}")
            if self.high is not None:
                parts.append(f"<= {self.high:g}")
        if self.nullable:
            parts.append("or None")
        return " ".join(parts) if parts else "any value"

    def problem(self, value: Any) -> str | None:
        """None if `value` is allowed, else what is wrong with it."""
        if value is None:
            return None if self.nullable or self.default is None else "None is not allowed"
        if self.check is not None:
            return self.check(value)
        if self.choices is not None:
            return None if value in self.choices else "not an allowed value"
        if self.types:
            if isinstance(value, bool) and bool not in self.types:
                return "a bool is not a number here"
            if not isinstance(value, self.types):
                return f"wrong type {type(value).__name__}"
            if isinstance(value, int | float):
                if isinstance(value, float) and math.isnan(value):
                    return "NaN is not allowed"
                if isinstance(value, float) and math.isinf(value):
                    return "inf is not allowed (give a finite number)"
                if self.low is not None and (
                    value < self.low or (self.low_exclusive and value == self.low)
                ):
                    return "out of range"
                if self.high is not None and value > self.high:
                    return "out of range"
        return None


_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "True/False",
    str: "a string",
    dict: "a dict",
    list: "a list",
}
NUMBER = (float, int)


def is_search_space(value: Any) -> bool:
    """True for Tune search-space values, which are resolved and checked in the trial."""
    from ray.tune.search.sample import Domain

    if isinstance(value, Domain):
        return True
    return isinstance(value, dict) and set(value) == {"grid_search"}


def _check_schedule(value: Any) -> str | None:
    """A learning rate: a positive number, or RLlib's piecewise-linear schedule
    `[[timestep, value], ...]` with timesteps starting at 0 and increasing."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return None if value > 0 and math.isfinite(value) else "must be a positive number"
    if isinstance(value, list | tuple) and value:
        try:
            steps = [float(step) for step, _ in value]
            values = [float(v) for _, v in value]
        except (TypeError, ValueError):
            return "a schedule must be a list of [timestep, value] pairs"
        if not all(math.isfinite(x) for x in (*steps, *values)):
            return "schedule timesteps and values must be finite numbers (no NaN or inf)"
        if steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])):
            return "schedule timesteps must start at 0 and increase"
        if any(v < 0 for v in values):
            return "schedule values must be >= 0"
        return None
    return "must be a positive number or a list of [timestep, value] pairs"


def _check_fragment(value: Any) -> str | None:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return None
    return "must be 'auto' or a positive integer"


def _subclass_check(base_path: str) -> Callable[[Any], str | None]:
    """A check that the value is a subclass of the class at `base_path` ("module:Name"),
    imported only when a value is checked (tunerl's own modules, no cycle at import)."""

    def check(value: Any) -> str | None:
        module_name, _, class_name = base_path.partition(":")
        base = getattr(importlib.import_module(module_name), class_name)
        if isinstance(value, type) and issubclass(value, base):
            return None
        if not isinstance(value, type):
            return f"must be a class (a subclass of {base.__name__}), got {type(value).__name__}"
        return f"{value.__name__} is not a subclass of {base.__module__}.{base.__name__}"

    return check


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _model_config_problem(model_config: Any) -> str | None:
    """What is wrong with the values of the keys the default modules read (unknown keys are
    refused by `validate()`, which knows the module class). Tune search spaces inside the
    dict are checked once the trial has resolved them."""
    from tunerl.core.rl_module import ACTIVATIONS

    if not isinstance(model_config, dict):
        return f"wrong type {type(model_config).__name__}; model_config must be a dict"
    for key, value in model_config.items():
        if not isinstance(key, str):
            return f"key {key!r} is not a string"
        if is_search_space(value):
            continue
        if key == "fcnet_hiddens" and (
            not isinstance(value, list | tuple) or not all(_is_positive_int(v) for v in value)
        ):
            return (
                f"model_config['fcnet_hiddens']={value!r}: must be a list of positive integers "
                "(layer widths), e.g. [64, 64]"
            )
        if key == "fcnet_activation" and value not in ACTIVATIONS:
            return (
                f"model_config['fcnet_activation']={value!r}: must be one of "
                f"{', '.join(repr(name) for name in ACTIVATIONS)}"
            )
        if key in _BOOL_MODEL_CONFIG_KEYS and not isinstance(value, bool):
            return f"model_config[{key!r}]={value!r}: must be True or False"
    return None


def _check_module_spec(value: Any) -> str | None:
    from tunerl.core.rl_module import RLModule, RLModuleSpec

    if not isinstance(value, RLModuleSpec):
        return (
            f"must be an RLModuleSpec, got {type(value).__name__}; pass "
            "RLModuleSpec(module_class=MyModule)"
        )
    module_class = value.module_class
    if module_class is not None and not (
        isinstance(module_class, type) and issubclass(module_class, RLModule)
    ):
        return f"module_class={module_class!r} is not a subclass of tunerl.core.rl_module.RLModule"
    if value.model_config is not None:
        problem = _model_config_problem(value.model_config)
        if problem is not None:
            return f"RLModuleSpec.{problem}"
    return None


# model_config keys the default modules read as True/False (DQN's dueling among them).
_BOOL_MODEL_CONFIG_KEYS = ("vf_share_layers", "free_log_std", "dueling")
# What a custom module class sets to list the model_config keys it reads; without it, a
# custom module's model_config keys are not checked.
MODEL_CONFIG_KEYS_ATTRIBUTE = "model_config_keys"

_SECTIONS = (
    "environment",
    "env_runners",
    "training",
    "evaluation",
    "rl_module",
    "resources",
    "learners",
    "debugging",
    "fault_tolerance",
    "callbacks",
    "reporting",
)

# Old names that RLlib scripts still use, mapped to today's field names.
DEPRECATED_NAMES = {
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
SPELLINGS = {"lambda": "lambda_"}


def _f(section: str, default: Any, doc: str, *types: type, **rules: Any) -> Field:
    return Field(section, default, doc, types, **rules)


def with_defaults(fields: dict[str, Field], defaults: dict[str, Any]) -> dict[str, Field]:
    """`fields` with some defaults replaced: how an algorithm's config sets its own."""
    return {
        name: dataclasses.replace(field, default=defaults.get(name, field.default))
        for name, field in fields.items()
    }


class AlgorithmConfig(_Config):
    """Settings of an algorithm; `PPOConfig` and friends add their own training fields.

    Works as a Tune `param_space` (Tune calls `to_dict()`), and `Algorithm(config=dict)`
    reads the dict back with `from_dict()`.
    """

    algo_class: type[Algorithm] | None = None

    FIELDS: dict[str, Field] = {
        # environment
        "env": _f(
            "environment",
            None,
            "A Gymnasium id, a name given to tunerl.register_env(), "
            "or a gymnasium.Env subclass (built with env_config).",
            check=lambda v: None,
        ),
        "env_config": _f(
            "environment",
            {},
            "Keyword arguments of the env (Gymnasium ids) or the dict its creator receives.",
            dict,
        ),
        "normalize_actions": _f(
            "environment",
            True,
            "Box actions: the policy acts in [-1, 1] and actions are scaled to the env's bounds.",
            bool,
        ),
        "clip_actions": _f(
            "environment",
            True,
            "Box actions: clip to the env's bounds before "
            "stepping (the unclipped action is what the policy is trained on).",
            bool,
        ),
        "disable_env_checking": _f(
            "environment",
            False,
            "Skip the per-step checks for NaN and observations outside the observation space.",
            bool,
        ),
        # env_runners
        "num_env_runners": _f(
            "env_runners",
            0,
            "Remote env-runner actors; 0 samples in the "
            "algorithm's own process, without starting Ray.",
            int,
            low=0,
        ),
        "num_envs_per_env_runner": _f(
            "env_runners", 1, "Sub-environments each runner steps as one vector env.", int, low=1
        ),
        "rollout_fragment_length": _f(
            "env_runners",
            "auto",
            "Steps per sub-env in one sample() call; 'auto' splits the train batch evenly.",
            check=_check_fragment,
        ),
        "num_cpus_per_env_runner": _f(
            "env_runners",
            1,
            "CPUs reserved per runner actor.",
            *NUMBER,
            low=0,
            low_exclusive=True,
        ),
        "num_gpus_per_env_runner": _f(
            "env_runners", 0, "GPUs reserved per runner actor.", *NUMBER, low=0
        ),
        "explore": _f(
            "env_runners",
            True,
            "Sample actions from the policy's distribution (False: take its most likely action).",
            bool,
        ),
        "observation_filter": _f(
            "env_runners",
            "NoFilter",
            "'MeanStdFilter' normalizes observations by running statistics stored in the module.",
            choices=("NoFilter", "MeanStdFilter"),
        ),
        "sample_timeout_s": _f(
            "env_runners",
            60.0,
            "Seconds to wait for a remote runner's sample. A runner that is later is skipped "
            "with a warning (its steps are neither counted nor trained on) and asked for "
            "nothing more until that sample is done; the others sample its share.",
            *NUMBER,
            low=0,
            low_exclusive=True,
        ),
        "env_runner_start_timeout_s": _f(
            "env_runners",
            30.0,
            "Seconds to wait for remote runner actors to be placed and built (at build and "
            "after a restart). Past it the build fails with what the runners ask for and what "
            "the Ray cluster has free, instead of waiting forever for CPUs or GPUs that are "
            "not there; raise it on a cluster that adds nodes on demand.",
            *NUMBER,
            low=0,
            low_exclusive=True,
        ),
        # training
        "gamma": _f("training", 0.99, "Discount factor.", *NUMBER, low=0, high=1),
        "lr": _f(
            "training",
            5e-5,
            "Learning rate: a number, or [[timestep, lr], ...] "
            "interpolated linearly over sampled env steps.",
            check=_check_schedule,
        ),
        "train_batch_size_per_learner": _f(
            "training", 4000, "Env steps sampled per training iteration.", int, low=1
        ),
        "minibatch_size": _f("training", 128, "Rows per SGD step.", int, low=1),
        "num_epochs": _f("training", 1, "Passes over each train batch.", int, low=1),
        "learner_class": _f(
            "training",
            None,
            "A Learner subclass to train with (e.g. one overriding compute_loss); None uses "
            "the algorithm's own.",
            nullable=True,
            check=_subclass_check("tunerl.core.learner:Learner"),
        ),
        "grad_clip": _f(
            "training",
            None,
            "Clip the global gradient norm to this value.",
            *NUMBER,
            low=0,
            low_exclusive=True,
            nullable=True,
        ),
        # evaluation
        "evaluation_interval": _f(
            "evaluation",
            None,
            "Evaluate every this many training iterations (None: never).",
            int,
            low=1,
            nullable=True,
        ),
        "evaluation_duration": _f(
            "evaluation", 10, "Episodes or env steps per evaluation.", int, low=1
        ),
        "evaluation_duration_unit": _f(
            "evaluation",
            "episodes",
            "Unit of evaluation_duration.",
            choices=("episodes", "timesteps"),
        ),
        "evaluation_num_env_runners": _f(
            "evaluation",
            0,
            "Remote runners for evaluation; 0 evaluates in the algorithm's process.",
            int,
            low=0,
        ),
        "evaluation_config": _f(
            "evaluation", {}, "Overrides for evaluation, e.g. {'explore': False}.", dict
        ),
        "evaluation_parallel_to_training": _f(
            "evaluation",
            False,
            "Evaluate while training_step() runs: the evaluation runners' sample requests "
            "start before the iteration trains and are collected after it, so they evaluate "
            "the weights from the start of the iteration (as in RLlib). Needs "
            "evaluation_num_env_runners >= 1 (remote evaluation runners).",
            bool,
        ),
        # rl_module
        "model_config": _f(
            "rl_module",
            {},
            "Options of the default module: fcnet_hiddens (positive layer widths), "
            "fcnet_activation, vf_share_layers, free_log_std (DQN: dueling); another key is "
            "refused unless a custom module_class lists it in its model_config_keys.",
            check=_model_config_problem,
        ),
        "rl_module_spec": _f(
            "rl_module",
            None,
            "An RLModuleSpec naming a custom module class (a subclass of RLModule).",
            nullable=True,
            check=_check_module_spec,
        ),
        # resources and learners
        "num_cpus_for_main_process": _f(
            "resources",
            1,
            "CPUs reserved for the algorithm (learner) process; also its torch threads.",
            *NUMBER,
            low=0,
            low_exclusive=True,
        ),
        "placement_strategy": _f(
            "resources",
            "PACK",
            "How a trial's bundles are placed on nodes.",
            choices=("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
        ),
        "num_learners": _f(
            "learners",
            0,
            "Remote learners; 0 trains in the algorithm's process (the only mode so far).",
            int,
            low=0,
            high=0,
        ),
        "num_gpus_per_learner": _f(
            "learners",
            0,
            "GPUs for the learner; used when CUDA is present, else the learner trains on the CPU.",
            *NUMBER,
            low=0,
        ),
        # debugging
        "seed": _f(
            "debugging",
            None,
            "Seed of every random stream (None: a fresh one).",
            int,
            nullable=True,
        ),
        "log_level": _f(
            "debugging",
            "WARN",
            "Level of tunerl's logger.",
            choices=("DEBUG", "INFO", "WARN", "ERROR"),
        ),
        # fault_tolerance
        "restart_failed_env_runners": _f(
            "fault_tolerance",
            True,
            "Replace a runner actor that died or whose env raised; the new one gets the "
            "current weights and the others sample what it owed this iteration.",
            bool,
        ),
        "max_num_env_runner_restarts": _f(
            "fault_tolerance",
            1000,
            "Restarts allowed per runner (and, with restart_failed_sub_environments, "
            "recreations per sub-env); sampling retries until the steps asked for are in or "
            "they are spent, then the runner is dropped (ignore_env_runner_failures) or "
            "training stops with the env's own error and traceback.",
            int,
            low=0,
        ),
        "ignore_env_runner_failures": _f(
            "fault_tolerance",
            False,
            "Go on with the healthy runners when one fails and is not restarted (training "
            "stops with the error when it was the last one).",
            bool,
        ),
        "restart_failed_sub_environments": _f(
            "fault_tolerance",
            False,
            "Recreate a sub-env that raises in step() or reset() in place: its episode is "
            "dropped, the runner and its other sub-envs go on. Each sub-env then steps on "
            "its own, also for Gymnasium ids with a native vector implementation.",
            bool,
        ),
        # callbacks
        "callbacks_class": _f(
            "callbacks",
            None,
            "A tunerl.Callbacks subclass.",
            nullable=True,
            check=_subclass_check("tunerl.core.callbacks:Callbacks"),
        ),
        # reporting
        "metrics_num_episodes_for_smoothing": _f(
            "reporting", 100, "Episode means are over the last this many episodes.", int, low=1
        ),
        "min_time_s_per_iteration": _f(
            "reporting",
            None,
            "Repeat sample-learn steps until an iteration took this long.",
            *NUMBER,
            low=0,
            nullable=True,
        ),
        "min_sample_timesteps_per_iteration": _f(
            "reporting",
            0,
            "Repeat sample-learn steps until this many env steps were sampled.",
            int,
            low=0,
        ),
    }

    def __init__(self, algo_class: type[Algorithm] | None = None):
        if algo_class is not None:
            self.algo_class = algo_class
        for name, field in self.FIELDS.items():
            object.__setattr__(self, name, copy.deepcopy(field.default))
        self._frozen = False

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
        field = self.FIELDS[name]
        # An old name is accepted from the section it used to live in (RLlib's
        # `.training(model=...)` sets today's `.rl_module(model_config=...)`).
        if section is not None and field.section != section and given not in DEPRECATED_NAMES:
            raise ConfigError(
                f"{type(self).__name__}.{section}() has no field {name!r}: it belongs to "
                f".{field.section}({name}=...)."
            )
        if not is_search_space(value):
            problem = field.problem(value)
            if problem is not None:
                raise ConfigError(self._message(name, value, problem))
        object.__setattr__(self, name, value)

    def _message(self, name: str, value: Any, problem: str) -> str:
        field = self.FIELDS[name]
        rule = "" if field.check is not None else f"; {name} must be {field.rule()}"
        return (
            f"{type(self).__name__}.{field.section}({name}={value!r}): {problem}{rule}. "
            f"({name}: {field.doc})"
        )

    def _canonical_name(self, name: str, section: str | None) -> str:
        if name in SPELLINGS:
            return SPELLINGS[name]
        if (
            name in DEPRECATED_NAMES
            and name not in self.FIELDS
            and DEPRECATED_NAMES[name] in self.FIELDS
        ):
            return DEPRECATED_NAMES[name]
        if name not in self.FIELDS:
            names = (
                list(self.FIELDS)
                if section is None
                else [n for n, f in self.FIELDS.items() if f.section == section]
            )
            close = difflib.get_close_matches(
                name, names, n=1, cutoff=0.5
            ) or difflib.get_close_matches(name, list(self.FIELDS), n=1, cutoff=0.5)
            where = f".{section}()" if section else type(self).__name__
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where} got an unknown field {name!r}.{hint}")
        return name

    def _update(self, section: str, kwargs: dict[str, Any]) -> AlgorithmConfig:
        if self._frozen:
            raise ConfigError("This config is frozen; use config.copy() to change it.")
        renamed = {k: DEPRECATED_NAMES[k] for k in kwargs if k in DEPRECATED_NAMES}
        if renamed:
            new = ", ".join(f"{old} -> {new}" for old, new in renamed.items())
            warnings.warn(
                f"Deprecated config names, please rename: {new}.",
                DeprecationWarning,
                stacklevel=3,
            )
        values = {name: value for name, value in kwargs.items() if value is not _UNSET}
        probe = copy.copy(self)
        for name, value in values.items():  # all checked before any is set
            probe._set(name, value, section)
        for name, value in values.items():
            self._set(name, value, section)
        return self

    # ------------------------------------------------------------------------ sections
    def environment(self, env: Any = _UNSET, **kwargs: Any) -> AlgorithmConfig:
        """env, env_config, normalize_actions, clip_actions, disable_env_checking."""
        return self._update("environment", {"env": env, **kwargs})

    def env_runners(self, **kwargs: Any) -> AlgorithmConfig:
        """num_env_runners, num_envs_per_env_runner, rollout_fragment_length, explore, ..."""
        return self._update("env_runners", kwargs)

    def rollouts(self, **kwargs: Any) -> AlgorithmConfig:
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

    def training(self, **kwargs: Any) -> AlgorithmConfig:
        """gamma, lr, train_batch_size_per_learner, minibatch_size, num_epochs, grad_clip,
        and the algorithm's own fields."""
        return self._update("training", kwargs)

    def evaluation(self, **kwargs: Any) -> AlgorithmConfig:
        """evaluation_interval, evaluation_duration(_unit), evaluation_num_env_runners,
        evaluation_config, evaluation_parallel_to_training."""
        if "evaluation_config" in kwargs and isinstance(kwargs["evaluation_config"], dict):
            self._check_overrides(kwargs["evaluation_config"])
        return self._update("evaluation", kwargs)

    def rl_module(self, **kwargs: Any) -> AlgorithmConfig:
        """model_config, rl_module_spec."""
        return self._update("rl_module", kwargs)

    def resources(self, **kwargs: Any) -> AlgorithmConfig:
        """num_cpus_for_main_process, placement_strategy."""
        return self._update("resources", kwargs)

    def learners(self, **kwargs: Any) -> AlgorithmConfig:
        """num_learners, num_gpus_per_learner."""
        return self._update("learners", kwargs)

    def debugging(self, **kwargs: Any) -> AlgorithmConfig:
        """seed, log_level."""
        return self._update("debugging", kwargs)

    def fault_tolerance(self, **kwargs: Any) -> AlgorithmConfig:
        """restart_failed_env_runners, max_num_env_runner_restarts, ignore_env_runner_failures,
        restart_failed_sub_environments."""
        return self._update("fault_tolerance", kwargs)

    def callbacks(self, callbacks_class: Any = _UNSET) -> AlgorithmConfig:
        """A tunerl.Callbacks subclass, called at algorithm init, after sampling and with
        every result."""
        return self._update("callbacks", {"callbacks_class": callbacks_class})

    def reporting(self, **kwargs: Any) -> AlgorithmConfig:
        """metrics_num_episodes_for_smoothing, min_time_s_per_iteration,
        min_sample_timesteps_per_iteration."""
        return self._update("reporting", kwargs)

    # ----------------------------------------------------------------- whole config
    def _check_overrides(self, overrides: dict) -> None:
        for name, value in overrides.items():
            probe = self.copy()
            probe._set(name, value, section=None)

    def validate(self) -> None:
        """Raises ConfigError if a value, or a combination of values, is not allowed."""
        for name, field in self.FIELDS.items():
            value = getattr(self, name)
            if is_search_space(value):
                raise ConfigError(
                    f"{name} holds a Tune search space ({value!r}); run it with tune.Tuner, "
                    "which resolves it, or give a single value to build an algorithm."
                )
            problem = field.problem(value)
            if problem is not None:
                raise ConfigError(self._message(name, value, problem))
        self._check_model_config_keys()
        if self.env is None:
            raise ConfigError(
                f"{type(self).__name__} has no env: call .environment('CartPole-v1') or "
                "another Gymnasium id, a registered name or a gymnasium.Env subclass."
            )
        if self.minibatch_size > self.train_batch_size_per_learner:
            raise ConfigError(
                f"minibatch_size={self.minibatch_size} is larger than "
                f"train_batch_size_per_learner={self.train_batch_size_per_learner}; it must "
                "be at most the train batch."
            )
        self._check_overrides(self.evaluation_config)
        if self.evaluation_parallel_to_training and self.evaluation_num_env_runners == 0:
            raise ConfigError(
                "evaluation_parallel_to_training=True needs remote evaluation runners, but "
                "evaluation_num_env_runners=0: an evaluation in the algorithm's own process "
                "cannot run while it trains. Set .evaluation(evaluation_num_env_runners=1) "
                "or more, or evaluation_parallel_to_training=False to evaluate after training."
            )

    def model_config_keys(self) -> set[str] | None:
        """The model_config keys the module will read, None if any key is allowed: the
        default modules' (`DEFAULT_MODEL_CONFIG` and this config's default model_config);
        for a custom `module_class`, those and its `model_config_keys` (a custom class that
        does not list them is not checked)."""
        from tunerl.core.rl_module import DEFAULT_MODEL_CONFIG

        keys = set(DEFAULT_MODEL_CONFIG) | set(self.FIELDS["model_config"].default)
        module_class = self.rl_module_spec.module_class if self.rl_module_spec else None
        if module_class is None:
            return keys
        declared = getattr(module_class, MODEL_CONFIG_KEYS_ATTRIBUTE, None)
        return None if declared is None else keys | set(declared)

    def _check_model_config_keys(self) -> None:
        allowed = self.model_config_keys()
        spec_config = (self.rl_module_spec.model_config if self.rl_module_spec else None) or {}
        for where, model_config in (
            ("model_config", self.model_config),
            ("rl_module_spec.model_config", spec_config),
        ):
            for key, value in model_config.items():
                if is_search_space(value):
                    raise ConfigError(
                        f"{where}[{key!r}] holds a Tune search space ({value!r}); run it with "
                        "tune.Tuner, which resolves it, or give a single value."
                    )
                if allowed is not None and key not in allowed:
                    close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.5)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise ConfigError(
                        f"{type(self).__name__}.rl_module({where}={{{key!r}: ...}}): unknown "
                        f"key {key!r}; the module reads {sorted(allowed)}.{hint} (A custom "
                        f"module_class lists the keys it reads in a class attribute "
                        f"{MODEL_CONFIG_KEYS_ATTRIBUTE}.)"
                    )

    def copy(self, copy_frozen: bool = False) -> AlgorithmConfig:
        """A deep copy, unfrozen unless `copy_frozen`."""
        new = copy.deepcopy(self)
        if not copy_frozen:
            object.__setattr__(new, "_frozen", False)
        return new

    def freeze(self) -> None:
        self._frozen = True

    def with_overrides(self, overrides: dict) -> AlgorithmConfig:
        """A copy with some fields replaced (how `evaluation_config` is applied)."""
        new = self.copy()
        for name, value in overrides.items():
            new._set(name, value, section=None)
        return new

    def to_dict(self) -> dict[str, Any]:
        """Flat {field: value}, RLlib's layout; what Tune resolves as a param_space."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self.FIELDS}

    def update_from_dict(self, config: dict[str, Any]) -> AlgorithmConfig:
        for name, value in config.items():
            if name.startswith("__"):
                continue
            if name in DEPRECATED_NAMES and name not in self.FIELDS:
                warnings.warn(
                    f"Deprecated config name {name!r}: use {DEPRECATED_NAMES[name]!r}.",
                    DeprecationWarning,
                    stacklevel=2,
                )
            self._set(name, value, section=None)
        return self

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> AlgorithmConfig:
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
            for name, field in self.FIELDS.items()
            if getattr(self, name) != field.default
        }
        body = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}({body})"

    def get_rollout_fragment_length(self) -> int:
        """Steps per sub-env in one `EnvRunner.sample()` without arguments: the field, or for
        'auto' the train batch split evenly over every runner's sub-envs (RLlib's rule)."""
        if self.rollout_fragment_length != "auto":
            return self.rollout_fragment_length
        num_envs = self.num_envs_per_env_runner * max(1, self.num_env_runners)
        return math.ceil(self.train_batch_size_per_learner / num_envs)

    # ------------------------------------------------------------------------ building
    def build_algo(self) -> Algorithm:
        """Validates the config and builds its algorithm."""
        if self.algo_class is None:
            raise ConfigError(f"{type(self).__name__} has no algo_class to build.")
        return self.algo_class(config=self.copy())

    def build(self) -> Algorithm:
        """Old name of `build_algo()`."""
        return self.build_algo()

    @classmethod
    def field_docs(cls) -> dict[str, Field]:
        return dict(cls.FIELDS)

    @classmethod
    def sections(cls) -> tuple[str, ...]:
        return _SECTIONS
