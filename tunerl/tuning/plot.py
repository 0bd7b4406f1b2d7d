"""Plots of a sweep: learning curves (return vs env steps, one line per trial, best
highlighted) and the search (score vs each searched hyperparameter). Needs matplotlib
(`pip install 'tunerl[tune]'`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ray.tune.result import TRAINING_ITERATION
from ray.tune.utils import flatten_dict

from tunerl.core import metrics as m
from tunerl.core.config import ConfigError
from tunerl.tuning.files import PATH_SEPARATOR
from tunerl.tuning.ranking import SEED_FIELD, load_results, rank_trials

DEFAULT_PLOT_FILE = "sweep.png"
# A searched field is drawn on a log axis when its values span more than this factor.
LOG_AXIS_SPAN = 20
PANEL_SIZE_INCHES = (5, 4)
DPI = 100


def _flatten(config: dict) -> dict:
    return flatten_dict(config, delimiter=PATH_SEPARATOR)


def varied_numeric_fields(configs: list[dict]) -> list[str]:
    """Config fields that hold numbers and differ between trials: the searched ones."""
    flats = [_flatten(c) for c in configs]
    names = set().union(*flats) if flats else set()
    varied = []
    for name in sorted(names):
        values = [f.get(name) for f in flats]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric and len({float(v) for v in values}) > 1 and name != SEED_FIELD:
            varied.append(name)
    return varied


def plot_experiment(
    experiment_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    metric: str = m.EPISODE_RETURN_MEAN_KEY,
    mode: str = "max",
) -> Path:
    """Writes a PNG (default `<experiment>/sweep.png`): the learning curves (`metric` over
    env steps, the best trial in red) and the final score against each searched field.
    Returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("tunerl plot needs matplotlib: pip install 'tunerl[tune]'.") from None

    results = load_results(experiment_path, metric, mode)
    ranked = rank_trials(results, metric, mode)
    if not ranked:
        raise ConfigError(f"{experiment_path} has no trials to plot.")
    best_path = ranked[0].path
    fields = varied_numeric_fields([s.config for s in ranked])
    columns = 1 + max(1, len(fields))
    width, height = PANEL_SIZE_INCHES
    fig, axes = plt.subplots(1, columns, figsize=(width * columns, height), squeeze=False)
    curves = axes[0][0]
    x_label = "env steps"
    for result in results:
        history = result.metrics_dataframe
        if history is None or metric not in history:
            continue
        is_best = result.path == best_path
        x_column = (
            m.NUM_ENV_STEPS_SAMPLED_LIFETIME
            if m.NUM_ENV_STEPS_SAMPLED_LIFETIME in history
            else TRAINING_ITERATION
        )
        if x_column == TRAINING_ITERATION:
            x_label = "iterations"
        curves.plot(
            history[x_column],
            history[metric],
            color="tab:red" if is_best else "tab:gray",
            alpha=1.0 if is_best else 0.5,
            linewidth=2.0 if is_best else 1.0,
            label="best" if is_best else None,
        )
    curves.set_xlabel(x_label)
    curves.set_ylabel(metric)
    curves.set_title("learning curves")
    if curves.get_legend_handles_labels()[1]:
        curves.legend(loc="lower right")
    flats = [(_flatten(s.config), s.score) for s in ranked if not math.isnan(s.score)]
    for axis, name in zip(axes[0][1:], fields):
        xs = [f[name] for f, _ in flats]
        ys = [score for _, score in flats]
        axis.scatter(xs, ys, color="tab:blue")
        if flats and name in flats[0][0]:
            axis.scatter([flats[0][0][name]], [flats[0][1]], color="tab:red", zorder=3)
        if xs and min(xs) > 0 and max(xs) / min(xs) > LOG_AXIS_SPAN:
            axis.set_xscale("log")
        axis.set_xlabel(name)
        axis.set_ylabel(f"final {metric}")
    if not fields:
        axes[0][1].set_axis_off()
    fig.tight_layout()
    out = Path(out_path) if out_path else Path(experiment_path) / DEFAULT_PLOT_FILE
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out.absolute()
