"""RLlib's side of sweep_cartpole.py: the same Optuna search over RLlib's PPO with Ray Tune.
It runs in the peer interpreter (`--peer-python`), where tunerl is not installed, so this
module imports nothing outside the standard library at the top, and it reads the search space
as plain data (the YAML file's `space` and `points_to_evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peers import RLLIB_TUNED_MODEL, RLLIB_TUNED_TRAINING

# Searched fields whose key in RLlib's config dict (AlgorithmConfig.to_dict) is not the
# attribute's name, which tunerl uses: the dict holds "lambda", and a "lambda_" added next to
# it would be applied or not depending on key order.
RLLIB_DICT_KEYS = {"lambda_": "lambda"}
# RLlib's example keeps PPOConfig's default of 2 remote env runners, each reserving a CPU of
# its own; with none, a trial samples in its own process and reserves one CPU, as tunerl's.
RLLIB_NUM_ENV_RUNNERS = 0
SUPPORTED = ("uniform", "loguniform", "randint", "choice")


@dataclass
class DefineByRun:
    """Suggests `space` ({field: {distribution: args}}) from an Optuna trial exactly as tunerl's
    `tunerl.tuning.search_space.Param.suggest` does: same names, same order, `randint` with
    both bounds included. So a seeded sampler draws the same values for both tools. Picklable,
    because Tune saves the searcher with the experiment."""

    space: dict[str, dict[str, list]]

    def __call__(self, trial) -> dict[str, Any]:
        values = {}
        for name, spec in self.space.items():
            (distribution, args), *rest = spec.items()
            scalars = all(v is None or isinstance(v, bool | int | float | str) for v in args)
            if rest or distribution not in SUPPORTED or (distribution == "choice" and not scalars):
                raise ValueError(
                    f"space.{name}: the RLlib peer supports one {', '.join(SUPPORTED)} per field "
                    f"(no 'when', no 'grid', choices of scalars only), got {spec!r}."
                )
            if distribution == "randint":
                value = trial.suggest_int(name, args[0], args[1])
            elif distribution == "choice":
                value = trial.suggest_categorical(name, args)
            else:
                log = distribution == "loguniform"
                value = trial.suggest_float(name, args[0], args[1], log=log)
            values[RLLIB_DICT_KEYS.get(name, name)] = value
        return values


def rllib_tuner(
    space: dict[str, dict[str, list]],
    points_to_evaluate: list[dict[str, Any]],
    *,
    metric: str,
    stop: dict[str, float],
    num_samples: int,
    max_concurrent: int,
    seed: int,
    storage_path: str,
    name: str,
    checkpoint_frequency: int,
    num_to_keep: int,
    callbacks: list,
):
    """A Tuner for RLlib's PPO on CartPole-v1: RLlib's tuned example (peers.py) as the fixed
    part, with no remote env runners so a trial reserves one CPU, and `space` searched by
    OptunaSearch with a TPE sampler seeded with `seed`. Checkpoints and failures are handled
    as tunerl's `build_tuner` handles them. RLlib's Algorithm does not implement
    `reset_config()`, so with `reuse_actors=True` Tune would fail every trial after the first
    ones ("Trainable runner reuse requires reset_config()"): every trial starts a new actor."""
    import optuna
    from ray import tune
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.search.optuna import OptunaSearch

    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=RLLIB_NUM_ENV_RUNNERS)
        .training(**RLLIB_TUNED_TRAINING)
        .rl_module(model_config=DefaultModelConfig(**RLLIB_TUNED_MODEL))
        .debugging(seed=seed)
    )
    search_alg = OptunaSearch(
        space=DefineByRun(space),
        metric=metric,
        mode="max",
        points_to_evaluate=points_to_evaluate or None,
        sampler=optuna.samplers.TPESampler(seed=seed),
        study_name=name,
    )
    return tune.Tuner(
        config.algo_class,
        param_space=config,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            metric=metric,
            mode="max",
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            stop=stop,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=num_to_keep,
                checkpoint_score_attribute=metric,
                checkpoint_score_order="max",
                checkpoint_frequency=checkpoint_frequency,
                checkpoint_at_end=True,
            ),
            failure_config=tune.FailureConfig(max_failures=1),
            callbacks=callbacks,
            verbose=0,  # as tunerl's sweep runs (see run_tunerl in sweep_cartpole.py)
        ),
    )


def rllib_settings() -> dict[str, Any]:
    """The fixed part of every RLlib trial, for the report."""
    return {
        **RLLIB_TUNED_TRAINING,
        "model_config": RLLIB_TUNED_MODEL,
        "num_env_runners": RLLIB_NUM_ENV_RUNNERS,
        "reuse_actors": False,
    }
