"""Honest ranking of a sweep's trials, re-evaluation on fresh seeds, and export of the best.

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
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from tunerl.core import metrics as m
from tunerl.core.config import ConfigError

RANK_BY = ("last", "max", "mean_last", "auc")
# Seeds for re-evaluation: far from the small seeds sweeps and experiments use.
FRESH_SEEDS = (1_000_003, 1_000_033, 1_000_037)


@dataclass
class TrialScore:
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


def score_history(history, metric: str, by: str = "last", last_n: int = 5) -> float:
    """A trial's score from its reports (a DataFrame with `metric` and env-step columns)."""
    if by not in RANK_BY:
        raise ConfigError(f"by={by!r} is not one of {RANK_BY}.")
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
    steps = history[m.NUM_ENV_STEPS_SAMPLED_LIFETIME].to_numpy(dtype=float)[finite]
    values = values[finite]
    if len(values) == 1 or steps[-1] == steps[0]:
        return float(values[0])
    # Mean height of the curve over the steps it covers.
    return float(np.trapezoid(values, steps) / (steps[-1] - steps[0]))


def _best_checkpoint(result, metric: str, mode: str) -> str | None:
    scored = [
        (ckpt, metrics.get(metric) if metrics.get(metric) is not None else _lookup(metrics, metric))
        for ckpt, metrics in (result.best_checkpoints or [])
    ]
    scored = [(ckpt, value) for ckpt, value in scored if value is not None and value == value]
    if scored:
        pick = max if mode == "max" else min
        return pick(scored, key=lambda pair: pair[1])[0].path
    return result.checkpoint.path if result.checkpoint else None


def _lookup(metrics: Mapping, key: str) -> Any:
    value: Any = metrics
    for part in key.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def rank_trials(
    results: tune.ResultGrid | str | os.PathLike,
    metric: str = m.EPISODE_RETURN_MEAN_KEY,
    mode: str = "max",
    by: str = "last",
    last_n: int = 5,
) -> list[TrialScore]:
    """Trials best first (NaN scores last), each with its best checkpoint by `metric`."""
    if mode not in ("max", "min"):
        raise ConfigError(f"mode={mode!r} must be 'max' or 'min'.")
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
        scores, key=lambda s: (math.isnan(s.score), sign * s.score if s.score == s.score else 0.0)
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
    config: dict[str, Any] = field(repr=False)
    sweep_score: float = math.nan
    seed_scores: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.seed_scores)) if self.seed_scores else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.seed_scores)) if self.seed_scores else math.nan


def reevaluate(
    results: tune.ResultGrid | str | os.PathLike,
    algo: str,
    *,
    top_k: int = 3,
    seeds: Sequence[int] = FRESH_SEEDS,
    stop: dict[str, float] | None = None,
    metric: str = m.EPISODE_RETURN_MEAN_KEY,
    mode: str = "max",
    by: str = "mean_last",
    storage_path: str | os.PathLike | None = None,
    max_concurrent: int | None = None,
) -> list[Reevaluation]:
    """Trains each of the `top_k` configs again on every seed in `seeds` (one Tune trial
    each) and ranks them by their mean score over those seeds, best first."""
    from ray.tune.search import BasicVariantGenerator

    from tunerl import ALGORITHMS

    ranked = [s for s in rank_trials(results, metric, mode, by) if s.score == s.score][:top_k]
    if not ranked:
        raise ConfigError("No trial has a finite score to re-evaluate.")
    points = [{**score.config, "seed": int(seed)} for score in ranked for seed in seeds]
    tuner = tune.Tuner(
        ALGORITHMS[algo],
        param_space=dict(ranked[0].config),
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=points),
            num_samples=len(points),
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            stop=stop or {m.NUM_ENV_STEPS_SAMPLED_LIFETIME: 100_000},
            storage_path=str(Path(storage_path).absolute()) if storage_path else None,
            verbose=0,
        ),
    )
    grid = tuner.fit()
    out = [Reevaluation(config=s.config, sweep_score=s.score) for s in ranked]
    for result in grid:
        config = result.config or {}
        for index, score in enumerate(ranked):
            if _same_config(config, score.config):
                out[index].seed_scores.append(score_history(result.metrics_dataframe, metric, by))
                break
    sign = -1.0 if mode == "max" else 1.0
    return sorted(out, key=lambda r: sign * r.mean if r.mean == r.mean else math.inf)


def _same_config(a: Mapping, b: Mapping) -> bool:
    keys = (set(a) | set(b)) - {"seed"}
    return all(
        json.dumps(a.get(k), sort_keys=True, default=str)
        == json.dumps(b.get(k), sort_keys=True, default=str)
        for k in keys
    )


def evaluate_checkpoint(
    path: str | os.PathLike,
    episodes: int = 10,
    seed: int | None = None,
    explore: bool = False,
    env_config: dict | None = None,
) -> dict[str, Any]:
    """Runs `episodes` episodes with a checkpoint's module, without the learner; returns
    their returns and lengths with mean and std."""
    from tunerl.core import checkpoint_io
    from tunerl.core.algorithm import MODULE_DIR, STATE_FILE, config_from_json
    from tunerl.core.columns import DEFAULT_MODULE_ID
    from tunerl.core.env_runner import EnvRunner
    from tunerl.core.rl_module import RLModule

    directory = Path(path)
    checkpoint_io.verify_manifest(directory)
    state = checkpoint_io.read_json(directory / STATE_FILE)
    algo_class = checkpoint_io.import_class(state["algo_class"], object)
    config = config_from_json(algo_class, state["config"])
    overrides = {**config.evaluation_config, "explore": explore, "num_envs_per_env_runner": 1}
    if env_config:
        overrides["env_config"] = {**config.env_config, **env_config}
    config = config.with_overrides(overrides)
    module = RLModule.from_checkpoint(directory / MODULE_DIR / DEFAULT_MODULE_ID)
    runner = EnvRunner(config, module.spec(), worker_index=0, seed=seed)
    runner.set_weights(module.get_state())
    try:
        runner.sample(num_episodes=episodes, explore=explore)
        stats = runner.get_metrics()
    finally:
        runner.stop()
    returns = stats["episode_returns"]
    return {
        "episode_returns": returns,
        "episode_lengths": stats["episode_lengths"],
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
    }


def export_best(
    results: tune.ResultGrid | str | os.PathLike,
    out_dir: str | os.PathLike,
    metric: str = m.EPISODE_RETURN_MEAN_KEY,
    mode: str = "max",
    by: str = "last",
) -> Path:
    """Copies the best trial's best checkpoint out as a deployable module folder:
    `out_dir/module/` (loads with `RLModule.from_checkpoint`), `config.json` and
    `scores.json`."""
    from tunerl.core import checkpoint_io
    from tunerl.core.algorithm import MODULE_DIR, STATE_FILE
    from tunerl.core.columns import DEFAULT_MODULE_ID

    ranked = rank_trials(results, metric, mode, by)
    best = next((s for s in ranked if s.checkpoint), None)
    if best is None:
        raise ConfigError("No trial has a checkpoint to export.")
    checkpoint = Path(best.checkpoint)
    checkpoint_io.verify_manifest(checkpoint)
    with checkpoint_io.atomic_directory(out_dir) as directory:
        shutil.copytree(checkpoint / MODULE_DIR / DEFAULT_MODULE_ID, directory / "module")
        state = checkpoint_io.read_json(checkpoint / STATE_FILE)
        checkpoint_io.write_json(
            directory / "config.json",
            {
                "algo_class": state["algo_class"],
                "config": state["config"],
            },
        )
        summary = {k: v for k, v in asdict(best).items() if k != "config"}
        checkpoint_io.write_json(
            directory / "scores.json",
            {
                "metric": metric,
                "mode": mode,
                "by": by,
                "best": summary,
                "ranking": [{"trial_id": s.trial_id, "score": s.score} for s in ranked],
            },
        )
    return Path(out_dir).absolute()
