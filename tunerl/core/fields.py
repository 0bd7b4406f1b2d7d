"""Fields: how a config declares a setting, and the groups of settings algorithms share.

A `Field` holds a setting's section, default, documentation and allowed values. A group is a
class whose attributes are Fields annotated with their static types, and the dict of those
Fields (`fields_of`). A config class inherits the classes of the groups it reads (so
`config.lr` has a type) and composes their dicts into its `FIELDS`:
`FIELDS = {**with_defaults({**AlgorithmConfig.FIELDS, **SGD_FIELDS}, {"lr": 2e-3}), ...}`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from tunerl.core.replay_buffers import check_buffer_config

if TYPE_CHECKING:
    import gymnasium as gym

    from tunerl.core.callbacks import Callbacks
    from tunerl.core.learner import Learner
    from tunerl.core.rl_module import MultiRLModuleSpec, RLModuleSpec
    from tunerl.policy.policy import PolicySpec


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the field, value and rule."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting: its section, default, documentation and what values it allows.
    `rebuilds_runners`: env runners built before the value changed cannot run with the new
    one (`AlgorithmConfig.needs_new_runners`); other fields are read at each use."""

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
    rebuilds_runners: bool = False

    def rule(self) -> str:
        """What is allowed, in words."""
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        elif self.types:
            parts.append(" or ".join(_TYPE_NAMES.get(t, t.__name__) for t in self.types))
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
        if not self.types:
            return None
        if isinstance(value, bool) and bool not in self.types:
            return "a bool is not a number here"
        if not isinstance(value, self.types):
            return f"wrong type {type(value).__name__}"
        if isinstance(value, float) and math.isnan(value):
            return "NaN is not allowed"
        if isinstance(value, float) and math.isinf(value):
            return "inf is not allowed (give a finite number)"
        if isinstance(value, int | float):
            low, high = self.low, self.high
            if low is not None and (value < low or (self.low_exclusive and value == low)):
                return "out of range"
            if high is not None and value > high:
                return "out of range"
        return None


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "True/False", str: "a string"}
_TYPE_NAMES.update({dict: "a dict", list: "a list"})
NUMBER = (float, int)


def field(section: str, default: Any, doc: str, *types: type, **rules: Any) -> Any:
    """A Field: `field("training", 0.99, "Discount factor.", *NUMBER, low=0, high=1)`; `rules`
    are Field's other keywords. Typed Any, as `dataclasses.field`, so that a group's
    `gamma: float = field(...)` gives the type of the config's value."""
    return Field(section, default, doc, types, **rules)


class _NotAccepted:
    def __repr__(self) -> str:
        return "NOT_ACCEPTED"


# Set on a config class for an inherited field it refuses (an offline algorithm's
# `rollout_fragment_length = NOT_ACCEPTED`): `fields_of` then leaves the field out.
NOT_ACCEPTED = _NotAccepted()


def fields_of(group: type) -> dict[str, Field]:
    """{name: Field} of a group class and its bases, in declaration order, without those a
    class sets to NOT_ACCEPTED."""
    found: dict[str, Field] = {}
    for cls in reversed(group.__mro__):
        for name, value in vars(cls).items():
            if isinstance(value, Field):
                found[name] = value
            elif value is NOT_ACCEPTED:
                found.pop(name, None)
    return found


def own_fields(namespace: dict[str, Any]) -> dict[str, Field]:
    """The Fields a class body declared so far: `own_fields(locals())` inside an algorithm's
    config class, for its FIELDS beside the groups it composes."""
    return {name: value for name, value in namespace.items() if isinstance(value, Field)}


def with_defaults(fields: dict[str, Field], defaults: dict[str, Any]) -> dict[str, Field]:
    """`fields` with some defaults replaced: how an algorithm's config sets its own. A
    default for a field `fields` does not hold raises (a misspelled or missing field)."""
    unknown = sorted(set(defaults) - set(fields))
    if unknown:
        raise ConfigError(f"Defaults for fields that are not declared: {unknown}")
    return {
        name: dataclasses.replace(f, default=defaults[name]) if name in defaults else f
        for name, f in fields.items()
    }


def is_search_space(value: Any) -> bool:
    """True for Tune search-space values, which are resolved and checked in the trial."""
    from ray.tune.search.sample import Domain

    return isinstance(value, Domain) or (isinstance(value, dict) and set(value) == {"grid_search"})


# ------------------------------------------------------------------------------ checks
def check_schedule(value: Any) -> str | None:
    """A positive number, or RLlib's piecewise-linear schedule `[[timestep, value], ...]`
    with timesteps starting at 0 and increasing."""
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


def check_fragment(value: Any) -> str | None:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return None
    return "must be 'auto' or a positive integer"


def subclass_check(base_path: str) -> Callable[[Any], str | None]:
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


# model_config keys the default modules read as True/False (DQN's dueling among them).
_BOOL_MODEL_CONFIG_KEYS = ("vf_share_layers", "free_log_std", "dueling")


def model_config_problem(model_config: Any) -> str | None:
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
            widths = "a list of positive integers (layer widths), e.g. [64, 64]"
            return f"model_config['fcnet_hiddens']={value!r}: must be {widths}"
        if key == "fcnet_activation" and value not in ACTIVATIONS:
            names = ", ".join(repr(name) for name in ACTIVATIONS)
            return f"model_config['fcnet_activation']={value!r}: must be one of {names}"
        if key in _BOOL_MODEL_CONFIG_KEYS and not isinstance(value, bool):
            return f"model_config[{key!r}]={value!r}: must be True or False"
    return None


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def check_module_spec(value: Any) -> str | None:
    from tunerl.core.rl_module import MultiRLModuleSpec, RLModule, RLModuleSpec

    if isinstance(value, MultiRLModuleSpec):
        for module_id, spec in value.module_specs.items():
            problem = check_module_spec(spec)
            if problem:
                return f"rl_module_specs[{module_id!r}]: {problem}"
        return None
    if not isinstance(value, RLModuleSpec):
        got = type(value).__name__
        return (
            f"must be an RLModuleSpec or a MultiRLModuleSpec, got {got}; pass "
            "RLModuleSpec(module_class=MyModule)"
        )
    module_class = value.module_class
    if module_class is not None and not (
        isinstance(module_class, type) and issubclass(module_class, RLModule)
    ):
        return f"module_class={module_class!r} is not a subclass of tunerl.core.rl_module.RLModule"
    problem = model_config_problem(value.model_config) if value.model_config else None
    return f"RLModuleSpec.{problem}" if problem else None


def _multi_agent() -> Any:
    import tunerl.core.multi_agent as multi_agent  # imports the module classes: not at load

    return multi_agent


def check_space(value: Any) -> str | None:
    import gymnasium as gym

    return None if isinstance(value, gym.Space) else "must be a gymnasium.spaces.Space"


def check_env_runner_cls(value: Any) -> str | None:
    """tunerl's EnvRunner or ExternalEnvRunner, or a subclass of one (imported when checked)."""
    from tunerl.core.env_runner import EnvRunner
    from tunerl.env.external.external_env_runner import ExternalEnvRunner

    if isinstance(value, type) and issubclass(value, EnvRunner | ExternalEnvRunner):
        return None
    return (
        f"{value!r} is not an env runner class: give tunerl.env.external.ExternalEnvRunner, "
        "tunerl.core.env_runner.EnvRunner or a subclass of one"
    )


def _runner_field(section: str, default: Any, doc: str, *types: type, **rules: Any) -> Any:
    """A field the env runners are built with: a change needs new runners."""
    return field(section, default, doc, *types, rebuilds_runners=True, **rules)


# --------------------------------------------------------------------------- the groups
# fmt: off
# (One entry per field, its doc under it: the formatter would give every argument a line.)
class OfflineOutputFields:
    """Recording: every algorithm's training env runners write what they sample as Parquet
    (`tunerl.offline.OutputWriter`; RLlib's `offline_data(output=...)`)."""
    output: str | None = _runner_field("offline_data", None,
        "A folder the training env runners write their samples to, as Parquet files with "
        "RLlib's column names, one row per env step (None: no recording). Evaluation runners "
        "write only if evaluation_config names an output.", str, nullable=True)
    output_max_rows_per_file: int = _runner_field("offline_data", 1000,
        "Rows per Parquet file: a runner writes a file (atomically) whenever it holds this "
        "many rows, so a run that dies loses at most this many rows per runner.", int, low=1)
    output_compress_columns: list[str] = _runner_field("offline_data", ["obs", "new_obs"],
        "Columns Parquet compresses with zstd (the others with snappy). Values are plain "
        "Parquet either way: tunerl never packs columns as pickles (RLlib's lz4 + "
        "cloudpickle), so RLlib reads the files with input_compress_columns=[].",
        check=lambda v: None if isinstance(v, list) and all(isinstance(x, str) for x in v)
        else "must be a list of column names")


def _check_input(value: Any) -> str | None:
    if isinstance(value, str) or (
        isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value)
    ):
        return None
    return "must be a folder, a glob, a file or a list of files (strings)"


class OfflineInputFields:
    """Reading recorded data (the offline algorithms: BC, MARWIL, CQL, IQL)."""
    input_: str | list[str] | None = field("offline_data", None,
        "Parquet files to train on: a folder (its *.parquet files), a glob, a file or a list "
        "of these; written by any algorithm's offline_data(output=...) or by RLlib with "
        "output_compress_columns=[].", nullable=True, check=_check_input)
    shuffle_buffer_size: int = field("offline_data", 100_000,
        "Rows held in memory and shuffled: data that fits is read once and kept; larger "
        "data streams through a buffer of this many rows, row groups in random order.",
        int, low=1)


OFFLINE_ESTIMATORS = ("is", "wis", "pdis", "fqe")


def _check_estimators(value: Any) -> str | None:
    names = [value] if isinstance(value, str) else value
    if isinstance(names, list | tuple) and names and all(n in OFFLINE_ESTIMATORS for n in names):
        if len(set(names)) == len(names):
            return None
        return "names an estimator twice"
    return f"must be one of {list(OFFLINE_ESTIMATORS)} or a list of them"


class OfflineEvaluationFields:
    """Off-policy estimates of the module's return from recorded episodes, without an env
    (`tunerl.offline.offline_evaluation`; RLlib's new-stack names)."""
    offline_evaluation_interval: int | None = field("evaluation", None,
        "Estimate the module's return from recorded episodes every this many training "
        "iterations, without an env (None: never); reported under "
        "evaluation/offline_eval_runners/.", int, low=1, nullable=True)
    offline_evaluation_type: str | list[str] = field("evaluation", "is",
        "The estimator, or a list of them: 'is' (importance sampling), 'wis' (weighted IS), "
        "'pdis' (per-decision IS), 'fqe' (fitted Q evaluation). The first one's estimate is "
        "evaluation/offline_eval_runners/episode_return_mean.", check=_check_estimators)
    offline_evaluation_input: str | list[str] | None = field("evaluation", None,
        "Parquet files of the episodes to estimate on (with eps_id, t and, for the IS "
        "estimators, the behaviour policy's action_logp, as every recording holds); None: "
        "offline_data's input_.", nullable=True, check=_check_input)
    offline_evaluation_gamma: float = field("evaluation", 1.0,
        "Discount of the estimated return: 1.0 estimates the undiscounted episode return, "
        "the units of env_runners/episode_return_mean.", *NUMBER, low=0, high=1)
    offline_evaluation_fqe_updates: int = field("evaluation", 500,
        "FQE: updates of its Q-network per offline evaluation (it keeps its weights from "
        "one evaluation to the next, as the policy changes little in between).", int, low=1)


class BaseFields(OfflineOutputFields, OfflineEvaluationFields):
    """What every algorithm reads: AlgorithmConfig's own fields (and recording's)."""

    env: str | type[gym.Env] | Callable[[dict], gym.Env] | None = _runner_field("environment", None,
        "A Gymnasium id, a name given to tunerl.register_env(), or a gymnasium.Env subclass "
        "(built with env_config).", check=lambda v: None)
    env_config: dict[str, Any] = _runner_field("environment", {},
        "Keyword arguments of the env (Gymnasium ids) or the dict its creator receives.", dict)
    normalize_actions: bool = _runner_field("environment", True,
        "Box actions: the policy acts in [-1, 1] and actions are scaled to the env's bounds.", bool)
    clip_actions: bool = _runner_field("environment", True,
        "Box actions: clip to the env's bounds before stepping (the unclipped action is what "
        "the policy is trained on).", bool)
    disable_env_checking: bool = _runner_field("environment", False,
        "Skip the per-step checks for NaN and observations outside the observation space.", bool)
    observation_space: gym.Space | None = _runner_field("environment", None,
        "The env's observation space, when no env is built here to read it from (external "
        "clients, env_runner_cls=ExternalEnvRunner).", nullable=True, check=check_space)
    action_space: gym.Space | None = _runner_field("environment", None,
        "The env's action space (as observation_space).", nullable=True, check=check_space)
    env_runner_cls: type | None = _runner_field("env_runners", None,
        "The env runner class: None for tunerl's EnvRunner (Gymnasium envs); "
        "tunerl.env.external.ExternalEnvRunner to sample from external clients over TCP "
        "(env_config: port, host, token).", nullable=True, check=check_env_runner_cls)
    num_env_runners: int = _runner_field("env_runners", 0,
        "Remote env-runner actors; 0 samples in the algorithm's own process, without Ray.",
        int, low=0)
    num_envs_per_env_runner: int = _runner_field("env_runners", 1,
        "Sub-environments each runner steps as one vector env.", int, low=1)
    rollout_fragment_length: int | Literal["auto"] = field("env_runners", "auto",
        "Steps per sub-env in one sample() call; 'auto' splits the train batch evenly over "
        "every runner's sub-envs (refused by algorithms that replay).", check=check_fragment)
    num_cpus_per_env_runner: float = _runner_field("env_runners", 1,
        "CPUs reserved per runner actor.", *NUMBER, low=0, low_exclusive=True)
    num_gpus_per_env_runner: float = _runner_field("env_runners", 0,
        "GPUs reserved per runner actor.", *NUMBER, low=0)
    explore: bool = field("env_runners", True,
        "Sample actions from the policy's distribution (False: take its most likely action).", bool)
    observation_filter: Literal["NoFilter", "MeanStdFilter"] = _runner_field("env_runners",
        "NoFilter", "'MeanStdFilter' normalizes observations by running statistics.",
        choices=("NoFilter", "MeanStdFilter"))
    sample_timeout_s: float = field("env_runners", 60.0,
        "Seconds to wait for a remote runner's sample. A runner that is later is skipped "
        "with a warning (its steps are neither counted nor trained on) and asked for "
        "nothing more until that sample is done; the others sample its share.",
        *NUMBER, low=0, low_exclusive=True)
    env_runner_start_timeout_s: float = field("env_runners", 30.0,
        "Seconds to wait for remote runner actors to be placed and built (at build and after "
        "a restart); then the build fails, naming what the runners ask for and what the "
        "cluster has free. Raise it on a cluster that adds nodes on demand.",
        *NUMBER, low=0, low_exclusive=True)
    gamma: float = field("training", 0.99, "Discount factor.", *NUMBER, low=0, high=1)
    train_batch_size_per_learner: int = field("training", 4000,
        "Rows in one learner update: env steps sampled for it (on-policy algorithms) or "
        "transitions replayed from the buffer (algorithms that replay).", int, low=1)
    learner_class: type[Learner] | None = field("training", None,
        "A Learner subclass to train with (e.g. one overriding compute_loss); None uses "
        "the algorithm's own.", nullable=True, check=subclass_check("tunerl.core.learner:Learner"))
    grad_clip: float | None = field("training", None,
        "Clip the global gradient norm to this value.",
        *NUMBER, low=0, low_exclusive=True, nullable=True)
    evaluation_interval: int | None = _runner_field("evaluation", None,
        "Evaluate every this many training iterations (None: never).", int, low=1, nullable=True)
    evaluation_duration: int = field("evaluation", 10,
        "Episodes or env steps per evaluation.", int, low=1)
    evaluation_duration_unit: Literal["episodes", "timesteps"] = field("evaluation",
        "episodes", "Unit of evaluation_duration.", choices=("episodes", "timesteps"))
    evaluation_num_env_runners: int = _runner_field("evaluation", 0,
        "Remote runners for evaluation; 0 evaluates in the algorithm's process.", int, low=0)
    evaluation_config: dict[str, Any] = _runner_field("evaluation", {},
        "Overrides for evaluation, e.g. {'explore': False}.", dict)
    evaluation_parallel_to_training: bool = field("evaluation", False,
        "Evaluate while training_step() runs, with the weights from the start of the "
        "iteration (as in RLlib); needs evaluation_num_env_runners >= 1.", bool)
    model_config: dict[str, Any] = _runner_field("rl_module", {},
        "Options of the default module: fcnet_hiddens (positive layer widths), "
        "fcnet_activation, vf_share_layers, free_log_std (DQN: dueling); another key is "
        "refused unless a custom module_class lists it in its model_config_keys.",
        check=model_config_problem)
    rl_module_spec: RLModuleSpec | MultiRLModuleSpec | None = _runner_field("rl_module", None,
        "An RLModuleSpec naming a custom module class (a subclass of RLModule), or a "
        "MultiRLModuleSpec with one per module id (multi-agent).",
        nullable=True, check=check_module_spec)
    policies: set[str] | list[str] | dict[str, PolicySpec | None] | None = _runner_field(
        "multi_agent", None,
        "Module ids of a multi-agent config: a set or list, or a dict of module id -> "
        "PolicySpec (spaces, and config overrides for that module). None: one module, "
        "default_policy, that every agent acts with.",
        nullable=True, check=lambda v: _multi_agent().check_policies(v))
    policy_mapping_fn: Callable[..., str] | dict[Any, str] | None = _runner_field("multi_agent",
        None, "fn(agent_id, episode, **kwargs) -> module id, called once per agent per episode, "
        "or a dict {agent_id: module_id} (data: experiment files and checkpoints hold it). "
        "None: the only module, else default_policy.",
        nullable=True, check=lambda v: _multi_agent().check_mapping(v))
    policies_to_train: set[str] | list[str] | Callable[..., bool] | None = field(
        "multi_agent", None,
        "Modules the learner updates: module ids, or fn(module_id, batch) -> bool; None: all. "
        "The others act with the weights they have (a frozen opponent).",
        nullable=True, check=lambda v: _multi_agent().check_policies_to_train(v))
    count_steps_by: Literal["env_steps", "agent_steps"] = field("multi_agent", "env_steps",
        "What rollout_fragment_length, train_batch_size_per_learner and the sampling "
        "counters count: env steps, or agent steps (one per agent that acted).",
        choices=("env_steps", "agent_steps"))
    num_cpus_for_main_process: float = field("resources", 1,
        "CPUs reserved for the algorithm (learner) process; also its torch threads.",
        *NUMBER, low=0, low_exclusive=True)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = field(
        "resources", "PACK", "How a trial's bundles are placed on nodes.",
        choices=("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))
    num_learners: int = field("learners", 0,
        "Remote learners; 0 trains in the algorithm's process (the only mode so far).",
        int, low=0, high=0)
    num_gpus_per_learner: float = field("learners", 0,
        "GPUs for the learner; used when CUDA is present, else the learner trains on the CPU.",
        *NUMBER, low=0)
    seed: int | None = field("debugging", None,
        "Seed of every random stream (None: a fresh one).", int, nullable=True)
    log_level: Literal["DEBUG", "INFO", "WARN", "ERROR"] = field("debugging", "WARN",
        "Level of tunerl's logger.", choices=("DEBUG", "INFO", "WARN", "ERROR"))
    restart_failed_env_runners: bool = field("fault_tolerance", True,
        "Replace a runner actor that died or whose env raised; the new one gets the "
        "current weights and the others sample what it owed this iteration.", bool)
    max_num_env_runner_restarts: int = field("fault_tolerance", 1000,
        "Restarts allowed per runner (and sub-env recreations, restart_failed_sub_environments); "
        "when they are spent the runner is dropped (ignore_env_runner_failures) or training "
        "stops with the env's own error and traceback.", int, low=0)
    ignore_env_runner_failures: bool = field("fault_tolerance", False,
        "Go on with the healthy runners when one fails and is not restarted (training "
        "stops with the error when it was the last one).", bool)
    restart_failed_sub_environments: bool = _runner_field("fault_tolerance", False,
        "Recreate a sub-env that raises in step() or reset() in place: its episode is "
        "dropped, the runner and its other sub-envs go on. Each sub-env then steps on "
        "its own, also for Gymnasium ids with a native vector implementation.", bool)
    callbacks_class: type[Callbacks] | None = field("callbacks", None,
        "A tunerl.Callbacks subclass.",
        nullable=True, check=subclass_check("tunerl.core.callbacks:Callbacks"))
    metrics_num_episodes_for_smoothing: int = field("reporting", 100,
        "Episode means are over the last this many episodes.", int, low=1)
    min_time_s_per_iteration: float | None = field("reporting", None,
        "Repeat sample-learn steps until an iteration took this long.",
        *NUMBER, low=0, nullable=True)
    min_sample_timesteps_per_iteration: int = field("reporting", 0,
        "Repeat sample-learn steps until this many env steps were sampled.", int, low=0)
    min_train_timesteps_per_iteration: int = field("reporting", 0,
        "Repeat sample-learn steps until this many env steps (rows) were trained on: how an "
        "iteration is defined for an algorithm that learns from data, not from sampling.",
        int, low=0)


class LRFields:
    lr: float | list[list[float]] = field("training", 5e-5,
        "Learning rate: a number, or [[timestep, lr], ...] interpolated linearly over "
        "sampled env steps.", check=check_schedule)


class SGDFields(LRFields):
    """Minibatch SGD over each train batch (PPO, IMPALA, APPO, VPG)."""
    minibatch_size: int = field("training", 128,
        "Rows per SGD step; at most train_batch_size_per_learner.", int, low=1)
    num_epochs: int = field("training", 1, "Passes of SGD over each train batch.", int, low=1)


class PolicyGradientFields:
    """Actor-critic losses: policy gradient + weighted value loss - weighted entropy."""
    vf_loss_coeff: float = field("training", 0.5, "Weight of the value loss.", *NUMBER, low=0)
    entropy_coeff: float = field("training", 0.0, "Weight of the entropy bonus.", *NUMBER, low=0)


class ClippedSurrogateFields:
    """PPO's clipped surrogate (Schulman et al. 2017); APPO's, against its target network."""
    clip_param: float = field("training", 0.2,
        "Clip of the probability ratio in the surrogate objective: the ratio of the current "
        "policy to the reference one (PPO: the sampling policy; APPO: the target network) "
        "counts within [1 - clip_param, 1 + clip_param].", *NUMBER, low=0, low_exclusive=True)
    use_kl_loss: bool = field("training", False,
        "Add kl_coeff * KL(reference policy || current policy) to the loss.", bool)
    kl_coeff: float = field("training", 0.2,
        "Initial weight of the KL penalty, adapted after each learner update: x1.5 when the "
        "mean KL was above 2 * kl_target, x0.5 when below kl_target / 2.", *NUMBER, low=0)
    kl_target: float = field("training", 0.01,
        "KL the adaptive penalty aims for.", *NUMBER, low=0, low_exclusive=True)


class VTraceFields:
    """V-trace's off-policy correction (Espeholt et al. 2018): IMPALA, APPO."""
    vtrace_clip_rho_threshold: float = field("training", 1.0,
        "V-trace's rho-bar: clip of the importance ratio in the value targets (eq. 1).",
        *NUMBER, low=0, low_exclusive=True)
    vtrace_clip_pg_rho_threshold: float = field("training", 1.0,
        "Clip of the importance ratio that weights the policy-gradient advantage.",
        *NUMBER, low=0, low_exclusive=True)


class AsyncLearningFields:
    """Asynchronous sampling and a learner thread: IMPALA, APPO."""
    learner_queue_size: int = field("training", 1,
        "With remote env runners: train batches handed to the learner thread that may "
        "still wait or train when training_step returns, while the driver collects the "
        "next (0: learn in the driver's thread, no overlap).", int, low=0)
    broadcast_interval: int = field("training", 1,
        "Learner updates between weight broadcasts to the remote env runners.", int, low=1)


class ReplayFields:
    """A replay buffer of n-step transitions (DQN, SAC): every learner update replays
    train_batch_size_per_learner of them."""
    # 100k: a CartPole-v1 DQN run's whole budget; with 50k one seed of ten collapsed once
    # the buffer held only recent episodes (benchmarks/results_seeds.json).
    replay_buffer_config: dict[str, Any] = field("training",
        {"type": "ReplayBuffer", "capacity": 100_000},
        "Replay buffer: type ReplayBuffer or PrioritizedReplayBuffer, capacity in "
        "transitions, and alpha and beta when prioritized.", check=check_buffer_config)
    n_step: int = field("training", 3,
        "Steps summed in each return before bootstrapping (fewer at an episode's end). A "
        "step goes into the replay buffer once its next n_step - 1 steps are sampled.", int, low=1)
    num_steps_sampled_before_learning_starts: int = field("training", 1000,
        "Env steps sampled before the first update.", int, low=0)
    training_intensity: float = field("training", 64.0,
        "Replayed transitions per sampled env step: after each sample, as many updates of "
        "train_batch_size_per_learner rows as this ratio owes (a fraction carries over).",
        *NUMBER, low=0, low_exclusive=True)
    store_buffer_in_checkpoints: bool = field("training", False,
        "Write the replay buffer into checkpoints, so a restored run continues with it "
        "(else it restarts with an empty one).", bool)


class TargetNetworkFields:
    """A target network (DQN, APPO; SAC's target critics take tau alone)."""
    tau: float = field("training", 0.005,
        "Target network update: < 1 moves the target tau of the way to the online network "
        "after every update (Polyak averaging); 1 copies it, after every update or, with "
        "target_network_update_freq, every that many env steps.",
        *NUMBER, low=0, low_exclusive=True, high=1)
    target_network_update_freq: int = field("training", 500,
        "Env steps between hard target updates (tau = 1): DQN counts the env steps it "
        "sampled, APPO those it trained on (each sampled step is trained on once).", int, low=1)
# fmt: on


BASE_FIELDS = fields_of(BaseFields)
LR_FIELDS = fields_of(LRFields)
SGD_FIELDS = fields_of(SGDFields)
POLICY_GRADIENT_FIELDS = fields_of(PolicyGradientFields)
CLIPPED_SURROGATE_FIELDS = fields_of(ClippedSurrogateFields)
VTRACE_FIELDS = fields_of(VTraceFields)
ASYNC_LEARNING_FIELDS = fields_of(AsyncLearningFields)
REPLAY_FIELDS = fields_of(ReplayFields)
TARGET_NETWORK_FIELDS = fields_of(TargetNetworkFields)
OFFLINE_INPUT_FIELDS = fields_of(OfflineInputFields)
# Fields only the training env runners read, which an algorithm that does not sample
# (offline RL) does not accept: `without_sampling_fields(AlgorithmConfig.FIELDS)`.
SAMPLING_ONLY_FIELDS = ("rollout_fragment_length", "min_sample_timesteps_per_iteration")


def without_sampling_fields(fields: dict[str, Field], *also: str) -> dict[str, Field]:
    """`fields` without SAMPLING_ONLY_FIELDS (and the names in `also`, e.g. gamma for BC)."""
    dropped = {*SAMPLING_ONLY_FIELDS, *also}
    return {name: f for name, f in fields.items() if name not in dropped}
