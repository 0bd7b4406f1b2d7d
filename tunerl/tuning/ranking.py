"""Honest ranking of a sweep's trials, and re-evaluation of the best on fresh seeds
(`export.py` takes the best checkpoint out of the sweep).

A trial's score is its `metric` at the end (`by="last"`), its best report (`"max"`), the mean
of its last `last_n` reports (`"mean_last"`, less noisy), or the area under its learning curve
over env steps (`"auc"`, which rewards learning fast). A config that won on one training seed
may have been lucky (Henderson et al. 2018, "Deep RL that Matters"): `reevaluate()` trains the
top configs again on seeds the sweep never used and ranks them by the mean over those.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.result import TRAINING_ITERATION

from tunerl.core import metrics as m
from tunerl.core.config import ConfigError
from tunerl.tuning.files import algorithm_class, get_path
from tunerl.tuning.search_space import MODES

RANK_BY = ("last", "max", "mean_last", "auc")
DEFAULT_LAST_N = 5
# Seeds for re-evaluation: far from the small seeds sweeps and experiments use.
FRESH_SEEDS = (1_000_003, 1_000_033, 1_000_037)
SEED_FIELD = "seed"
REEVALUATION_SUFFIX = "_reevaluation"


@dataclass
class TrialScore:
    """One trial of a sweep, scored: where it ran, its score and env steps, its config and
    its best checkpoint (by the ranking metric)."""

    trial_id: str
    path: str
    score: float
    num_env_steps: int
    config: dict[str, Any] = field(repr=False)
    checkpoint: str | None = None


def load_results(
    experiment_path: str | os.PathLike, metric: str | None = None, mode: str | None = None
) -> tune.ResultGrid:
    """The ResultGrid of a finished (or interrupted) sweep directory."""
    from ray.tune import ExperimentAnalysis

    path = Path(experiment_path).absolute()
    if not path.is_dir():
        raise ConfigError(f"Experiment directory {path} does not exist.")
    try:
        analysis = ExperimentAnalysis(str(path), default_metric=metric, default_mode=mode)
    except Exception as error:  # noqa: BLE001 - Tune raises several types for a bad dir
        raise ConfigError(f"{path} is not a Tune experiment directory ({error}).") from None
    return tune.ResultGrid(analysis)


def _check_ranking(by: str, mode: str, last_n: int) -> None:
    if by not in RANK_BY:
        raise ConfigError(f"by={by!r} is not one of {RANK_BY}.")
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r} is not one of {MODES}.")
    if last_n < 1:
        raise ConfigError(f"last_n={last_n} must be at least 1.")


def score_history(history, metric: str, by: str = "last", last_n: int = DEFAULT_LAST_N) -> float:
    """A trial's score from its reports (a DataFrame with a `metric` column, and the env
    steps, else the iterations, as the x axis of `by="auc"`); NaN if it never reported a
    finite `metric`."""
    _check_ranking(by, "max", last_n)
    if history is None or metric not in history:
        return math.nan
    values = history[metric].to_numpy(dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return math.nan
    if by == "last":
        return float(values[finite][-1])
    if by == "max":
        return float(values[finite].max())
    if by == "mean_last":
        return float(values[finite][-last_n:].mean())
    x_column = (
        m.NUM_ENV_STEPS_SAMPLED_LIFETIME
        if m.NUM_ENV_STEPS_SAMPLED_LIFETIME in history
        else TRAINING_ITERATION
    )
    steps = history[x_column].to_numpy(dtype=float)[finite]
    values = values[finite]
    if len(values) == 1 or steps[-1] == steps[0]:
        return float(values[0])
    # Mean height of the curve over the steps it covers.
    return float(np.trapezoid(values, steps) / (steps[-1] - steps[0]))


def _best_checkpoint(result, metric: str, mode: str) -> str | None:
    """The trial's checkpoint with the best `metric`, else its latest one."""
    scored = []
    for checkpoint, metrics in result.best_checkpoints or []:
        value = metrics.get(metric, get_path(metrics, metric))
        if isinstance(value, int | float) and math.isfinite(value):
            scored.append((checkpoint, value))
    if scored:
        pick = max if mode == "max" else min
        return pick(scored, key=lambda pair: pair[1])[0].path
    return result.checkpoint.path if result.checkpoint else None


def rank_trials(
    results: tune.ResultGrid | str | os.PathLike,
    metric: str = m.EPISODE_RETURN_MEAN_KEY,
    mode: str = "max",
    by: str = "last",
    last_n: int = DEFAULT_LAST_N,
) -> list[TrialScore]:
    """Trials best first (NaN scores last), each with its best checkpoint by `metric`."""
    _check_ranking(by, mode, last_n)
    if not isinstance(results, tune.ResultGrid):
        results = load_results(results, metric, mode)
    scores = []
    for result in results:
        history = result.metrics_dataframe
        steps = 0
        if history is not None and m.NUM_ENV_STEPS_SAMPLED_LIFETIME in history:
            steps = int(history[m.NUM_ENV_STEPS_SAMPLED_LIFETIME].max())
        scores.append(
            TrialScore(
                trial_id=(result.metrics or {}).get("trial_id", Path(result.path).name),
                path=result.path,
                score=score_history(history, metric, by, last_n),
                num_env_steps=steps,
                config=result.config or {},
                checkpoint=_best_checkpoint(result, metric, mode),
            )
        )
    sign = -1.0 if mode == "max" else 1.0
    return sorted(
        scores, key=lambda s: (math.isnan(s.score), 0.0 if math.isnan(s.score) else sign * s.score)
    )


def normalized_score(
    returns: Mapping[str, float], ranges: Mapping[str, tuple[float, float]]
) -> float:
    """Mean over envs of (return - low) / (high - low): a multi-env objective in which no env
    dominates by the scale of its rewards. `ranges` gives (random, solved)-like bounds."""
    missing = set(returns) - set(ranges)
    if missing:
        raise ConfigError(f"No normalization range for envs {sorted(missing)}.")
    parts = []
    for env, value in returns.items():
        low, high = ranges[env]
        if not high > low:
            raise ConfigError(f"Range for {env!r} must have high > low, got {(low, high)}.")
        parts.append((value - low) / (high - low))
    return float(np.mean(parts))


@dataclass
class Reevaluation:
    """One of the top configs trained again: its score in the sweep and on each fresh seed."""

    config: dict[str, Any] = field(repr=False)
    sweep_score: float = math.nan
    seeds: list[int] = field(default_factory=list)
    seed_scores: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.seed_scores)) if self.seed_scores else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.seed_scores)) if self.seed_scores else math.nan


def _without_seed(config: Mapping) -> str:
    return json.dumps(
        {k: v for k, v in config.items() if k != SEED_FIELD}, sort_keys=True, default=str
    )


def _reevaluation_dirname(trial) -> str:
    return f"{trial.trainable_name}_{trial.trial_id}_{SEED_FIELD}={trial.config.get(SEED_FIELD)}"


def reevaluate(
    results: tune.ResultGrid | str | os.PathLike,
    algo: str | None = None,
    *,
    top_k: int = 3,
    seeds: Sequence[int] = FRESH_SEEDS,
    stop: dict[str, float] | None = None,
    metric: str = m.EPISODE_RETURN_MEAN_KEY,
    mode: str = "max",
    by: str = "mean_last",
    last_n: int = DEFAULT_LAST_N,
    storage_path: str | os.PathLike | None = None,
    max_concurrent: int | None = None,
) -> list[Reevaluation]:
    """Trains each of the `top_k` distinct configs of a sweep again on every seed in `seeds`
    (one Tune trial each, in `<sweep>_reevaluation` beside the sweep unless `storage_path`
    says otherwise) and ranks them by their mean score over those seeds, best first.
    `algo` and `stop` default to what `run_sweep` noted about the sweep."""
    from ray.tune.search import BasicVariantGenerator

    from tunerl.tuning.sweep import DEFAULT_STOP, SWEEP_FILE, sweep_info
    from tunerl.tuning.tensorboard import TensorBoardCallback

    if not seeds:
        raise ConfigError("reevaluate needs at least one seed.")
    if not isinstance(results, tune.ResultGrid):
        results = load_results(results, metric, mode)
    experiment_path = Path(results.experiment_path)
    info = sweep_info(experiment_path) if (experiment_path / SWEEP_FILE).is_file() else {}
    try:
        algo_class = algorithm_class(algo or info.get("algo"))
    except ConfigError as error:
        raise ConfigError(f"reevaluate needs the algorithm of the sweep: {error}") from None
    ranked: list[TrialScore] = []
    for score in rank_trials(results, metric, mode, by, last_n):
        distinct = all(_without_seed(score.config) != _without_seed(s.config) for s in ranked)
        if not math.isnan(score.score) and distinct:
            ranked.append(score)
    ranked = ranked[:top_k]
    if not ranked:
        raise ConfigError(f"No trial of {experiment_path} has a finite {metric} to re-evaluate.")
    points = [{**score.config, SEED_FIELD: int(seed)} for score in ranked for seed in seeds]
    tuner = tune.Tuner(
        algo_class,
        param_space=dict(ranked[0].config),
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=points),
            num_samples=len(points),
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,
            trial_dirname_creator=_reevaluation_dirname,
        ),
        run_config=tune.RunConfig(
            name=experiment_path.name + REEVALUATION_SUFFIX,
            stop=stop or info.get("stop") or DEFAULT_STOP,
            storage_path=str(Path(storage_path or experiment_path.parent).absolute()),
            callbacks=[TensorBoardCallback(hparam_names=[SEED_FIELD])],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    out = {
        _without_seed(s.config): Reevaluation(config=s.config, sweep_score=s.score) for s in ranked
    }
    for result in grid:
        config = result.config or {}
        entry = out.get(_without_seed(config))
        if entry is not None:
            entry.seeds.append(config[SEED_FIELD])
            entry.seed_scores.append(score_history(result.metrics_dataframe, metric, by, last_n))
    sign = -1.0 if mode == "max" else 1.0
    return sorted(
        out.values(),
        key=lambda r: (math.isnan(r.mean), 0.0 if math.isnan(r.mean) else sign * r.mean),
    )
