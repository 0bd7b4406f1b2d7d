"""Sweeps over tunerl algorithms: search spaces as data, Optuna and schedulers through Tune,
honest ranking, export, plots and TensorBoard. Thin helpers over `ray.tune`, not a second
scheduler."""

from tunerl.tuning.export import evaluate_checkpoint, export_best, export_checkpoint
from tunerl.tuning.plot import plot_experiment
from tunerl.tuning.ranking import (
    Reevaluation,
    TrialScore,
    load_results,
    normalized_score,
    rank_trials,
    reevaluate,
    score_history,
)
from tunerl.tuning.search_space import SearchSpace
from tunerl.tuning.search_space_file import (
    SearchSpaceError,
    load_search_space,
    search_space_from_dict,
)
from tunerl.tuning.sweep import (
    build_tuner,
    make_sampler,
    make_scheduler,
    resume_sweep,
    run_sweep,
    sweep_info,
)
from tunerl.tuning.tensorboard import TensorBoardCallback

__all__ = [
    "Reevaluation",
    "SearchSpace",
    "SearchSpaceError",
    "TensorBoardCallback",
    "TrialScore",
    "build_tuner",
    "evaluate_checkpoint",
    "export_best",
    "export_checkpoint",
    "load_results",
    "load_search_space",
    "make_sampler",
    "make_scheduler",
    "normalized_score",
    "plot_experiment",
    "rank_trials",
    "reevaluate",
    "resume_sweep",
    "run_sweep",
    "score_history",
    "search_space_from_dict",
    "sweep_info",
]
