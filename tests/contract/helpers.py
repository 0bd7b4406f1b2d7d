"""What the contract tests share: the registered algorithms, their tiny configs and how two
runs are compared.

Tiny settings are derived from the fields each config declares (`TINY_FIELDS`, applied where
the field exists), never from a table of algorithm names.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch

import tunerl
from tunerl import Algorithm, AlgorithmConfig
from tunerl.core import metrics as m

ALGORITHM_NAMES = list(tunerl.ALGORITHMS)

# The value of each field that makes an iteration take a fraction of a second, applied to
# every config that declares the field: 64 env steps over two sub-envs per iteration,
# minibatches of 32 passed over once, one hidden layer of 16 units, replay that starts after
# 32 steps and replays a quarter of a minibatch per sampled step.
TINY_FIELDS: dict[str, Any] = {
    "num_envs_per_env_runner": 2,
    "train_batch_size_per_learner": 64,
    "minibatch_size": 32,
    "num_epochs": 1,
    "lr": 1e-3,
    "min_sample_timesteps_per_iteration": 64,
    "num_steps_sampled_before_learning_starts": 32,
    "training_intensity": 8.0,
    "target_network_update_freq": 64,
    "model_config": {"fcnet_hiddens": [16]},
    "replay_buffer_config": {"type": "ReplayBuffer", "capacity": 1000},
}
# An algorithm that trains on recorded data: an iteration of two updates of 64 rows.
TINY_OFFLINE_FIELDS: dict[str, Any] = {"min_train_timesteps_per_iteration": 128}
# A config whose default rollout_fragment_length is a number of steps (the off-policy ones,
# which update between fragments) gets this one; "auto" stays "auto".
TINY_FRAGMENT_STEPS = 4

# A config that declares a broadcast interval lets its remote runners sample with weights
# that lag the learner by a timing-dependent number of updates (IMPALA, APPO): with remote
# runners its results depend on the clock, so seeded repeats are checked with the local one.
ASYNC_SAMPLING_FIELD = "broadcast_interval"


# An algorithm that trains on recorded data (it declares `input_`) gets this many rows of
# the env, recorded once per test session by PPO's env runners (`offline_data(output=...)`).
OFFLINE_ROWS = 512
_RECORDED: dict[Any, str] = {}


def trains_offline(name: str) -> bool:
    return declares(name, "input_")


def recorded_input(
    env: Any,
    env_config: dict | None = None,
    policies: tuple[str, ...] | None = None,
    policy_mapping_fn: Any = None,
) -> str:
    """A folder of OFFLINE_ROWS env steps of `env` sampled by an untrained PPO, recorded
    once; with `policies` (and `policy_mapping_fn`), by those modules of a multi-agent env."""
    key = (env, tuple(sorted((env_config or {}).items())), policies)
    if key not in _RECORDED:
        folder = Path(tempfile.mkdtemp(prefix="tunerl-contract-data-"))
        recorder = (
            tunerl.PPOConfig()
            .environment(env, env_config=env_config or {})
            .training(train_batch_size_per_learner=OFFLINE_ROWS, minibatch_size=OFFLINE_ROWS)
            # One sub-env: whole episodes (Pendulum's two of 200 steps), which offline
            # evaluation estimates on.
            .env_runners(num_envs_per_env_runner=1)
            .offline_data(output=str(folder), output_max_rows_per_file=OFFLINE_ROWS // 2)
            .debugging(seed=0)
        )
        if policies is not None:
            recorder.multi_agent(policies=set(policies), policy_mapping_fn=policy_mapping_fn)
        recorder = recorder.build_algo()
        try:
            recorder.train()
        finally:
            recorder.stop()
        _RECORDED[key] = str(folder)
    return _RECORDED[key]


def config_class(name: str) -> type[AlgorithmConfig]:
    return tunerl.ALGORITHMS[name].config_class


def declares(name: str, field: str) -> bool:
    return field in config_class(name).FIELDS


def samples_asynchronously(name: str) -> bool:
    return declares(name, ASYNC_SAMPLING_FIELD)


def tiny_settings(config_cls: type[AlgorithmConfig], **overrides: Any) -> dict[str, Any]:
    """`TINY_FIELDS` restricted to the fields `config_cls` declares, plus `overrides`."""
    fields = config_cls.FIELDS
    settings = {name: value for name, value in TINY_FIELDS.items() if name in fields}
    if "input_" in fields:
        settings.update(TINY_OFFLINE_FIELDS)
    fragment = fields.get("rollout_fragment_length")  # offline algorithms have none
    if fragment is not None and isinstance(fragment.default, int):
        settings["rollout_fragment_length"] = TINY_FRAGMENT_STEPS
    settings.update(overrides)
    return settings


# An algorithm that trains on Box actions only (`continuous_actions_only`) runs on this env.
CONTINUOUS_ENV = "Pendulum-v1"


def default_env(name: str) -> str:
    continuous = getattr(tunerl.ALGORITHMS[name], "continuous_actions_only", False)
    return CONTINUOUS_ENV if continuous else "CartPole-v1"


def tiny_config(
    name: str,
    env: Any = None,
    num_env_runners: int = 0,
    seed: int | None = 0,
    **overrides: Any,
) -> AlgorithmConfig:
    """The registered algorithm `name` with tiny settings on `env`."""
    config_cls = config_class(name)
    env = default_env(name) if env is None else env
    config = config_cls().environment(env).env_runners(num_env_runners=num_env_runners)
    for field, value in tiny_settings(config_cls, **overrides).items():
        getattr(config, config_cls.FIELDS[field].section)(**{field: value})
    if trains_offline(name) and "input_" not in overrides:
        config.offline_data(input_=recorded_input(env, overrides.get("env_config")))
    return config.debugging(seed=seed)


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """The parts of a result that depend on the seed only, not on the clock."""
    return {
        m.ENV_RUNNER_RESULTS: result[m.ENV_RUNNER_RESULTS],
        m.LEARNER_RESULTS: result[m.LEARNER_RESULTS],
        m.NUM_ENV_STEPS_SAMPLED_LIFETIME: result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME],
        m.NUM_ENV_STEPS_TRAINED_LIFETIME: result[m.NUM_ENV_STEPS_TRAINED_LIFETIME],
        m.NUM_EPISODES_LIFETIME: result[m.NUM_EPISODES_LIFETIME],
        "training_iteration": result["training_iteration"],
    }


def same_numbers(a: Any, b: Any) -> bool:
    """`a == b` with NaN equal to NaN (an episode mean before any episode ended is NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(same_numbers(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def weights(algo: Algorithm) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in algo.get_module().get_state().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
