"""Stop criteria `{result key: number}`, as Tune's dict stopper reads them: the result keys
tunerl reports, the check of criteria when a file or the command line gives them
(`check_stop`), and which of them a result meets (`reached_stop_keys`).

A criterion on a key that counts how far a run got (`BUDGET_KEYS`: iterations, env steps,
episodes, seconds) is a cap; any other is a target (`targets`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from ray.tune.result import TIME_THIS_ITER_S, TIME_TOTAL_S, TRAINING_ITERATION

from tunerl.core import metrics as m
from tunerl.core.config import ConfigError
from tunerl.tuning.files import closest, get_path, is_number

logger = logging.getLogger("tunerl")

_EPISODE_STATS = (
    m.EPISODE_RETURN_MEAN,
    m.EPISODE_RETURN_MAX,
    m.EPISODE_RETURN_MIN,
    m.EPISODE_LEN_MEAN,
    m.NUM_EPISODES,
    m.NUM_ENV_STEPS_SAMPLED,
)
# Result keys that count how far a run got, with what they count ("the 100,000 env-step
# cap"): stop criteria on them are budgets (caps), the others are targets.
BUDGET_UNITS = {
    TRAINING_ITERATION: "iteration",
    m.NUM_ENV_STEPS_SAMPLED_LIFETIME: "env-step",
    m.NUM_ENV_STEPS_TRAINED_LIFETIME: "trained-env-step",
    m.NUM_EPISODES_LIFETIME: "episode",
    TIME_TOTAL_S: "second",
}
BUDGET_KEYS = tuple(BUDGET_UNITS)
# Every result key tunerl reports, besides those under `learners/` and `timers/`, whose
# names depend on the algorithm and module (and keys that callbacks add).
RESULT_KEYS = (
    *BUDGET_KEYS,
    TIME_THIS_ITER_S,
    "time_since_restore",
    "iterations_since_restore",
    m.ENV_STEPS_PER_S,
    *(f"{m.ENV_RUNNER_RESULTS}/{stat}" for stat in _EPISODE_STATS),
    *(f"{m.EVALUATION_RESULTS}/{m.ENV_RUNNER_RESULTS}/{stat}" for stat in _EPISODE_STATS),
    f"{m.FAULT_TOLERANCE}/{m.NUM_HEALTHY_ENV_RUNNERS}",
    f"{m.FAULT_TOLERANCE}/{m.NUM_ENV_RUNNER_RESTARTS}",
)
# RLlib's names (old API stack and `rllib train` examples) of keys tunerl reports as others.
RLLIB_RESULT_KEYS = {
    "episode_reward_mean": m.EPISODE_RETURN_MEAN_KEY,
    "episode_reward_max": f"{m.ENV_RUNNER_RESULTS}/{m.EPISODE_RETURN_MAX}",
    "episode_reward_min": f"{m.ENV_RUNNER_RESULTS}/{m.EPISODE_RETURN_MIN}",
    "episode_len_mean": f"{m.ENV_RUNNER_RESULTS}/{m.EPISODE_LEN_MEAN}",
    "env_runners/episode_reward_mean": m.EPISODE_RETURN_MEAN_KEY,
    "evaluation/episode_reward_mean": m.EVALUATION_RETURN_MEAN_KEY,
    "evaluation/env_runners/episode_reward_mean": m.EVALUATION_RETURN_MEAN_KEY,
    "timesteps_total": m.NUM_ENV_STEPS_SAMPLED_LIFETIME,
    "num_env_steps_sampled": m.NUM_ENV_STEPS_SAMPLED_LIFETIME,
    "episodes_total": m.NUM_EPISODES_LIFETIME,
}
_OPEN_RESULT_SECTIONS = (f"{m.LEARNER_RESULTS}/", f"{m.TIMERS}/")
# How close (difflib ratio) an unknown key must be to a known one to be taken for a typo of
# it; a key further from all of them may be one a callback adds, and is checked in the run.
_TYPO_CUTOFF = 0.8


def check_stop(stop: Any, where: str = "stop.") -> dict[str, float]:
    """Stop criteria as Tune and `tunerl train` take them: values finite numbers, RLlib's
    key names mapped to tunerl's (with a warning), and a key that is a near miss of a result
    key refused with the closest one. Messages name each key as `where` + key ("stop.lr" in
    a file, "--stop lr" on the command line)."""
    if not isinstance(stop, Mapping):
        raise ConfigError(
            f"{where.rstrip('. ')}: needs a mapping of result key: number, got {stop!r}."
        )
    checked: dict[str, float] = {}
    for key, value in stop.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}{key!r}: not a result key.")
        if not is_number(value) or not math.isfinite(value):
            raise ConfigError(
                f"{where}{key}: needs a finite number, got {value!r} (a NaN or inf criterion "
                "can never be met)."
            )
        if key in RLLIB_RESULT_KEYS:
            logger.warning(
                "%s%s is RLlib's name of a key tunerl reports as %s; stopping on that.",
                where,
                key,
                RLLIB_RESULT_KEYS[key],
            )
            key = RLLIB_RESULT_KEYS[key]
        elif key not in RESULT_KEYS and not key.startswith(_OPEN_RESULT_SECTIONS):
            hint = closest(key, RESULT_KEYS, cutoff=_TYPO_CUTOFF)
            if hint:
                raise ConfigError(f"{where}{key}: not a result key.{hint}")
        checked[key] = value
    return checked


def targets(stop: Mapping[str, float]) -> dict[str, float]:
    """The criteria of `stop` that are targets, not caps (see `BUDGET_KEYS`)."""
    return {key: value for key, value in stop.items() if key not in BUDGET_KEYS}


def reached_stop_keys(result: dict[str, Any], stop: Mapping[str, float]) -> list[str]:
    """The stop keys whose value in `result` is at or beyond the limit (Tune's dict stopper
    stops when there is any). A key the result does not hold raises a ConfigError naming the
    closest key it holds, as Tune does: such a criterion could never be met. Evaluation keys
    are only in the results of evaluation iterations, so they may be missing."""
    reached = []
    for key, limit in stop.items():
        value = get_path(result, key)
        if value is None and not key.startswith(f"{m.EVALUATION_RESULTS}/"):
            keys = sorted(set(_flat_keys(result)) | set(RESULT_KEYS))
            raise ConfigError(
                f"stop key {key!r} is not in the results, so it can never be met."
                f"{closest(key, keys)}"
            )
        if value is not None and value == value and value >= limit:
            reached.append(key)
    return reached


def should_stop(result: dict[str, Any], stop: Mapping[str, float]) -> bool:
    """Tune's dict stopper: any metric at or beyond its value (see `reached_stop_keys`)."""
    return bool(reached_stop_keys(result, stop))


def _flat_keys(result: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for name, value in result.items():
        if isinstance(value, dict):
            keys.extend(_flat_keys(value, f"{prefix}{name}/"))
        elif name != "config":
            keys.append(f"{prefix}{name}")
    return keys
