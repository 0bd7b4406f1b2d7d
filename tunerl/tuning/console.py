"""What a terminal shows while tunerl trains and sweeps: Tune's classic progress table, no
deprecation noise or info chatter from Ray and Optuna, tunerl's log records as one line
each, and user errors as their message. `tunerl` (the command line) uses all of it; a script
or notebook may call `quiet_libraries()` and `show_log_records()` too.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import yaml
from ray.tune.result import TRAINING_ITERATION

from tunerl.core import metrics as m
from tunerl.core.checkpoint_io import CheckpointError
from tunerl.core.config import ConfigError
from tunerl.core.rl_module import UnsupportedSpaceError
from tunerl.env.registry import EnvError
from tunerl.tuning.files import yaml_error_message
from tunerl.tuning.search_space import SearchSpace

# Columns of Tune's progress table (`progress_table`), beside the metric and searched fields.
PROGRESS_COLUMNS = {TRAINING_ITERATION: "iter", m.NUM_ENV_STEPS_SAMPLED_LIFETIME: "env steps"}
# Errors a user can fix (their option, config, file, checkpoint or env).
USER_ERRORS = (ConfigError, EnvError, CheckpointError, UnsupportedSpaceError)


def progress_table(space: SearchSpace):
    """Tune's classic progress table for a sweep of `space`: one row per trial, the searched
    fields, the metric (by its last name part), iterations and env steps; best first."""
    from ray.tune import CLIReporter

    return CLIReporter(
        parameter_columns=space.param_names,
        metric_columns={space.metric: space.metric.rpartition("/")[2], **PROGRESS_COLUMNS},
        sort_by_metric=True,
    )


def start_ray() -> None:
    """Starts Ray (or joins the cluster RAY_ADDRESS names) without its dashboard, with only
    errors from its logger on the terminal."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level=logging.ERROR)


def quiet_libraries() -> None:
    """No deprecation noise or info chatter from the libraries underneath; Tune's classic
    progress table (one row per trial, the searched fields as columns). Changes this
    process's warning filters and the environment its Ray workers inherit."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    # A resumed trial reports again the iterations after its last checkpoint; Optuna keeps
    # the first report of each and warns about every repeat.
    warnings.filterwarnings("ignore", message="The reported value is ignored", module="optuna")
    # Inherited by Ray's worker processes, which do not run this function.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # The level of Ray's logger in the processes Ray starts (trials log each checkpoint).
    os.environ.setdefault("RAY_LOGGER_LEVEL", "warning")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass


class OneLineHandler(logging.StreamHandler):
    """tunerl's log records on stderr as `tunerl: warning: ...` (e.g. an RLlib stop key
    mapped to tunerl's name)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # the current one (tests and callers may replace it)
        super().emit(record)

    def format(self, record: logging.LogRecord) -> str:
        return f"tunerl: {record.levelname.lower()}: {record.getMessage()}"


def show_log_records() -> None:
    """tunerl's log records on stderr, one line each (`OneLineHandler`), added once."""
    library_logger = logging.getLogger("tunerl")
    if not any(isinstance(h, OneLineHandler) for h in library_logger.handlers):
        library_logger.addHandler(OneLineHandler())


def user_error_message(error: BaseException) -> str | None:
    """The message of an error the user can fix (`USER_ERRORS`, or YAML they wrote), None
    for anything else, which is a bug and keeps its traceback."""
    if isinstance(error, yaml.YAMLError):
        mark = getattr(error, "problem_mark", None)
        return yaml_error_message(mark.name if mark else "YAML", error)
    return str(error) if isinstance(error, USER_ERRORS) else None
