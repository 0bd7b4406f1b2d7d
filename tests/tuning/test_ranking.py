"""Honest ranking of a sweep: scores from learning curves, ranking by the evaluation return,
re-evaluation on fresh seeds, plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tunerl.core.metrics import EVALUATION_RETURN_MEAN_KEY
from tunerl.tuning import (
    normalized_score,
    plot_experiment,
    rank_trials,
    reevaluate,
    score_history,
)
from tunerl.tuning.ranking import FRESH_SEEDS, REEVALUATION_SUFFIX

from .sweep_helpers import GRID_SEED, RETURN_KEY, STEPS_KEY

HISTORY = pd.DataFrame(
    {
        RETURN_KEY: [10.0, float("nan"), 30.0, 20.0, 40.0],
        STEPS_KEY: [100, 200, 300, 400, 500],
        "training_iteration": [1, 2, 3, 4, 5],
    }
)


def test_score_history_by_last_max_mean_of_last_n_and_area_under_the_curve():
    assert score_history(HISTORY, RETURN_KEY, "last") == 40.0
    assert score_history(HISTORY, RETURN_KEY, "max") == 40.0
    assert score_history(HISTORY, RETURN_KEY, "mean_last", last_n=2) == 30.0
    # Trapezoids over the finite points (100, 10), (300, 30), (400, 20), (500, 40), divided
    # by the 400 steps they span: the mean height of the curve.
    assert score_history(HISTORY, RETURN_KEY, "auc") == pytest.approx(
        (20 * 200 + 25 * 100 + 30 * 100) / 400
    )
    by_iteration = HISTORY.drop(columns=[STEPS_KEY])
    assert score_history(by_iteration, RETURN_KEY, "auc") == pytest.approx((20 * 2 + 25 + 30) / 4)
    assert math.isnan(score_history(HISTORY, "evaluation/env_runners/episode_return_mean"))
    with pytest.raises(ValueError, match=r"by='median' is not one of \('last'"):
        score_history(HISTORY, RETURN_KEY, "median")


def test_normalized_score_averages_envs_on_their_own_scale():
    ranges = {"CartPole-v1": (20.0, 500.0), "Pendulum-v1": (-1400.0, -200.0)}
    returns = {"CartPole-v1": 260.0, "Pendulum-v1": -200.0}
    assert normalized_score(returns, ranges) == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="No normalization range for envs \\['Acrobot-v1'\\]"):
        normalized_score({"Acrobot-v1": -100.0}, ranges)
    with pytest.raises(ValueError, match="high > low"):
        normalized_score({"CartPole-v1": 1.0}, {"CartPole-v1": (5.0, 5.0)})


def test_rank_trials_orders_by_the_metric_and_names_each_best_checkpoint(grid_sweep):
    for metric in (RETURN_KEY, EVALUATION_RETURN_MEAN_KEY):
        ranked = rank_trials(grid_sweep, metric=metric, by="mean_last", last_n=2)
        assert len(ranked) == 2
        expected = sorted(
            (score_history(r.metrics_dataframe, metric, "mean_last", 2) for r in grid_sweep),
            reverse=True,
        )
        assert [s.score for s in ranked] == pytest.approx(expected)
        for score in ranked:
            assert Path(score.checkpoint).parent == Path(score.path)
            assert score.num_env_steps > 0
    worst_first = rank_trials(grid_sweep.experiment_path, RETURN_KEY, mode="min")
    best_first = rank_trials(grid_sweep.experiment_path, RETURN_KEY, mode="max")
    assert [s.trial_id for s in worst_first] == [s.trial_id for s in reversed(best_first)]


def test_reevaluate_trains_the_top_config_again_on_fresh_seeds(grid_sweep):
    seeds = FRESH_SEEDS[:2]
    (entry,) = reevaluate(
        grid_sweep,
        top_k=1,
        seeds=seeds,
        stop={"training_iteration": 2},
        by="mean_last",
    )
    best = rank_trials(grid_sweep, by="mean_last")[0]
    assert entry.config == best.config
    assert entry.sweep_score == best.score
    assert sorted(entry.seeds) == sorted(seeds)
    assert GRID_SEED not in entry.seeds
    assert len(entry.seed_scores) == 2 and all(math.isfinite(s) for s in entry.seed_scores)
    assert entry.mean == pytest.approx(np.mean(entry.seed_scores))
    # The re-evaluation ran beside the sweep, one trial per seed, with the sweep's config.
    folder = Path(grid_sweep.experiment_path + REEVALUATION_SUFFIX)
    params = [json.loads(p.read_text()) for p in folder.glob("*/params.json")]
    assert sorted(p["seed"] for p in params) == sorted(seeds)
    assert all(p["lr"] == best.config["lr"] for p in params)


def test_plot_writes_a_png_of_curves_and_the_searched_field(grid_sweep, tmp_path):
    out = plot_experiment(grid_sweep.experiment_path, tmp_path / "sweep.png")
    image = matplotlib.image.imread(out)
    height, width = image.shape[:2]
    # The learning curves and lr (the only numeric field that differs): two panels.
    assert width > 1.5 * height > 0
    assert image.std() > 0  # not a blank canvas
