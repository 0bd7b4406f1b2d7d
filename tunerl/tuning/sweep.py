"""Sweeps: a search space (or an experiment with one) run as a `tune.Tuner`.

Thin helpers over Tune, not a second scheduler: `build_tuner()` picks the search algorithm
(Optuna with a TPE, random, CMA-ES or GP sampler; random search; grid search), a scheduler
(ASHA, PBT, PB2 or none), checkpoint ranking, actor reuse and the TensorBoard logger, and
returns the Tuner, which the caller can still change.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.result import TRAINING_ITERATION

from tunerl.core import metrics as m
from tunerl.core.config import ConfigError
from tunerl.tuning.files import (
    PATH_SEPARATOR,
    algorithm_class,
    format_value,
    get_path,
    nest,
    set_path,
)
from tunerl.tuning.search_space import (
    CHOICE,
    GRID,
    LOGUNIFORM,
    RANDINT,
    UNIFORM,
    Param,
    SearchSpace,
)
from tunerl.tuning.stopping import check_stop
from tunerl.tuning.tensorboard import HPARAM_METRICS, TensorBoardCallback

SEARCHES = ("optuna", "random", "grid")
SAMPLERS = ("tpe", "random", "cmaes", "gp")
SCHEDULERS = ("none", "asha", "pbt", "pb2")
DEFAULT_STOP = {m.NUM_ENV_STEPS_SAMPLED_LIFETIME: 100_000}
# ASHA: a trial is first judged after this fraction of the budget, and each rung keeps the
# best 1/reduction_factor of the trials that reached it.
ASHA_GRACE_FRACTION = 1 / 8
ASHA_REDUCTION_FACTOR = 2
# ASHA's budget, in iterations, when the stop criteria give neither env steps nor iterations.
ASHA_DEFAULT_MAX_ITERATIONS = 100
# PBT and PB2: iterations between perturbations, and the fraction of trials that copy (and
# are copied from) the others.
DEFAULT_PERTURBATION_INTERVAL = 5
PBT_QUANTILE_FRACTION = 0.5
# PBT and PB2 copy a checkpoint of a good trial into a bad one; keeping more than two per
# trial leaves the one being copied in place (Tune warns at two or fewer).
PERTURBING_SCHEDULERS = ("pbt", "pb2")
PBT_MIN_CHECKPOINTS_TO_KEEP = 4
# Trial folders: Tune names them after the whole config when a searcher suggests it, which
# for a tunerl config is every field; these are named after the searched fields only.
MAX_TRIAL_DIRNAME_CHARS = 120
_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9_.=,+-]")
SWEEP_FILE = "tunerl_sweep.json"
RESULTS_ENV_VAR = "TUNERL_RESULTS"


def make_sampler(name: str, seed: int | None = None):
    """An Optuna sampler by name; CMA-ES needs `cmaes`, GP needs `scipy` (both in the
    `tune` extra)."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError(
                "sampler 'cmaes' needs the cmaes package: pip install 'tunerl[tune]'."
            ) from None
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        try:
            import scipy  # noqa: F401
        except ImportError:
            raise ConfigError(
                "sampler 'gp' needs the scipy package: pip install 'tunerl[tune]'."
            ) from None
        return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"sampler {name!r} is not one of {SAMPLERS}.")


@dataclass
class ClipToBounds:
    """PBT's explore step multiplies a value by 0.8 or 1.2 whatever its bounds (a gamma of
    0.99 would become 1.19); this puts each searched range field back inside [low, high].
    A dataclass, so Tune can pickle the scheduler with the experiment."""

    bounds: dict[str, tuple[float, float]]

    def __call__(self, config: dict) -> dict:
        for name, (low, high) in self.bounds.items():
            value = get_path(config, name)
            if value is not None:
                set_path(config, name, min(max(value, low), high))
        return config


def _unconditional(space: SearchSpace, *distributions: str) -> list[Param]:
    return [p for p in space.params if p.distribution in distributions and not p.when]


def _asha(stop: dict[str, float]):
    from ray.tune.schedulers import ASHAScheduler

    if m.NUM_ENV_STEPS_SAMPLED_LIFETIME in stop:
        time_attr, budget = m.NUM_ENV_STEPS_SAMPLED_LIFETIME, stop[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    else:
        time_attr = TRAINING_ITERATION
        budget = stop.get(TRAINING_ITERATION, ASHA_DEFAULT_MAX_ITERATIONS)
    return ASHAScheduler(
        time_attr=time_attr,
        max_t=int(budget),
        grace_period=max(1, int(budget * ASHA_GRACE_FRACTION)),
        reduction_factor=ASHA_REDUCTION_FACTOR,
    )


def make_scheduler(
    name: str,
    space: SearchSpace,
    stop: dict[str, float],
    perturbation_interval: int = DEFAULT_PERTURBATION_INTERVAL,
):
    """ASHA on env steps (or iterations, whichever the stop criteria give); PBT perturbs the
    searched fields (ranges by a factor, choices to a neighbour) and PB2 the continuous ones,
    every `perturbation_interval` iterations. Conditional fields are left alone."""
    if name == "none":
        return None
    if name == "asha":
        return _asha(stop)
    if name == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        ranges = _unconditional(space, UNIFORM, LOGUNIFORM, RANDINT)
        lists = _unconditional(space, CHOICE, GRID)
        if not ranges and not lists:
            raise ConfigError(
                "scheduler 'pbt' needs at least one unconditional field in the search space "
                f"(uniform, loguniform, randint, choice or grid); {space.path or 'it'} has none."
            )
        mutations = {p.name: p.tune_domain() for p in ranges}
        mutations.update({p.name: list(p.args) for p in lists})
        # Synchronous: every trial reaches the perturbation point before any copies another,
        # so a trial never skips its turn because the better one has no checkpoint yet. The
        # trials of one sweep take the same time per iteration, so little time is lost.
        return PopulationBasedTraining(
            time_attr=TRAINING_ITERATION,
            perturbation_interval=perturbation_interval,
            hyperparam_mutations=nest(mutations),
            custom_explore_fn=ClipToBounds({p.name: p.bounds for p in ranges}),
            quantile_fraction=PBT_QUANTILE_FRACTION,
            synch=True,
        )
    if name == "pb2":
        try:
            from ray.tune.schedulers.pb2 import PB2
        except ImportError as error:
            raise ConfigError(
                f"scheduler 'pb2' needs GPy and scikit-learn ({error}): pip install 'tunerl[tune]'."
            ) from None
        continuous = _unconditional(space, UNIFORM, LOGUNIFORM)
        if not continuous:
            raise ConfigError(
                "scheduler 'pb2' needs at least one unconditional uniform or loguniform field; "
                f"{space.path or 'the search space'} has none."
            )
        return PB2(
            time_attr=TRAINING_ITERATION,
            perturbation_interval=perturbation_interval,
            hyperparam_bounds=nest({p.name: list(p.bounds) for p in continuous}),
            quantile_fraction=PBT_QUANTILE_FRACTION,
            synch=True,
        )
    raise ConfigError(f"scheduler {name!r} is not one of {SCHEDULERS}.")


def study_name(space: SearchSpace) -> str:
    """The Optuna study of a space: its `name`, else "<algo>_<env>"."""
    return space.name or f"{space.algo}_{space.env}"


def trial_dirname(trial) -> str:
    """`PPO_<trial id>_lr=0.0012,num_epochs=7`: the trial's searched values only."""
    from ray.tune.utils import flatten_dict

    values = flatten_dict(trial.evaluated_params or {}, delimiter=PATH_SEPARATOR)
    tag = ",".join(
        f"{name.rpartition(PATH_SEPARATOR)[2]}={format_value(value)}"
        for name, value in values.items()
    )
    name = f"{trial.trainable_name}_{trial.trial_id}" + (f"_{tag}" if tag else "")
    return _UNSAFE_PATH_CHARS.sub("_", name)[:MAX_TRIAL_DIRNAME_CHARS]


def build_tuner(
    space: SearchSpace,
    *,
    num_samples: int = 8,
    search: str = "optuna",
    sampler: str = "tpe",
    scheduler: str = "none",
    max_concurrent: int | None = None,
    stop: dict[str, float] | None = None,
    storage_path: str | os.PathLike | None = None,
    name: str | None = None,
    optuna_storage: str | None = None,
    seed: int | None = None,
    checkpoint_frequency: int = 5,
    num_to_keep: int = 2,
    reuse_actors: bool = True,
    perturbation_interval: int = DEFAULT_PERTURBATION_INTERVAL,
    callbacks: list | None = None,
    progress_reporter=None,
    verbose: int = 1,
) -> tune.Tuner:
    """A Tuner for `space`. `stop` defaults to the space's, then to `DEFAULT_STOP`.
    `optuna_storage` ("sqlite:///study.db") keeps the Optuna study (`study_name(space)`) on
    disk: a later sweep of the same space with the same storage continues it, its sampler
    learning from every earlier trial (and optuna-dashboard shows it).
    `seed` seeds the sampler and every trial. `callbacks` are added to Tune's; a
    `TensorBoardCallback` is added unless one of them is a TensorBoard logger already.
    `progress_reporter` (e.g. a `tune.CLIReporter`) is used by Tune's classic output only
    (RAY_AIR_NEW_OUTPUT=0, as `tunerl tune` sets)."""
    from ray.tune.logger import TBXLoggerCallback

    if search not in SEARCHES:
        raise ConfigError(f"search {search!r} is not one of {SEARCHES}.")
    if num_samples < 1:
        raise ConfigError(f"num_samples={num_samples} must be at least 1.")
    if max_concurrent is not None and max_concurrent < 1:
        raise ConfigError(f"max_concurrent={max_concurrent} must be at least 1 (or None).")
    stop = check_stop(stop or space.stop or DEFAULT_STOP)
    if scheduler in PERTURBING_SCHEDULERS:
        num_to_keep = max(num_to_keep, PBT_MIN_CHECKPOINTS_TO_KEEP)
    search_alg = None
    if search == "optuna":
        if space.has_grid:
            raise ConfigError(
                f"{space.path or 'the search space'} has 'grid' fields, which Optuna cannot "
                "search; use search='grid' (or 'random'), or make them 'choice'."
            )
        from ray.tune.search.optuna import OptunaSearch

        storage = None
        if optuna_storage:
            import optuna

            storage = optuna.storages.RDBStorage(optuna_storage)
        search_alg = OptunaSearch(
            space=space.to_optuna(),
            metric=space.metric,
            mode=space.mode,
            points_to_evaluate=space.points_for_optuna() or None,
            sampler=make_sampler(sampler, seed),
            study_name=study_name(space),
            storage=storage,
        )
        param_space = space.base_config().to_dict()
    else:
        if search == "grid" and not space.has_grid:
            raise ConfigError(
                f"search='grid' needs at least one 'grid' field; {space.path or 'the space'} "
                "has none (use search='random' or 'optuna')."
            )
        param_space = space.to_tune()
        if search == "random" and space.points_to_evaluate:
            from ray.tune.search import BasicVariantGenerator

            search_alg = BasicVariantGenerator(points_to_evaluate=space.points_for_tune())
    if seed is not None:
        param_space["seed"] = seed
    callbacks = list(callbacks or [])
    if not any(isinstance(c, TBXLoggerCallback) for c in callbacks):
        metrics = (space.metric, *HPARAM_METRICS)
        callbacks.append(TensorBoardCallback(hparam_names=space.param_names, metrics=metrics))
    return tune.Tuner(
        algorithm_class(space.algo),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=make_scheduler(scheduler, space, stop, perturbation_interval),
            metric=space.metric,
            mode=space.mode,
            num_samples=num_samples if search != "grid" else 1,
            max_concurrent_trials=max_concurrent,
            reuse_actors=reuse_actors,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(Path(storage_path).absolute()) if storage_path else None,
            stop=stop,
            callbacks=callbacks,
            progress_reporter=progress_reporter,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=num_to_keep,
                checkpoint_score_attribute=space.metric,
                checkpoint_score_order=space.mode,
                checkpoint_frequency=checkpoint_frequency,
                checkpoint_at_end=True,
            ),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=verbose,
        ),
    )


def default_storage_path() -> Path:
    """Where sweeps go unless told: $TUNERL_RESULTS, else ~/tunerl_results."""
    return Path(os.environ.get(RESULTS_ENV_VAR, Path.home() / "tunerl_results"))


def run_sweep(
    space: SearchSpace,
    *,
    name: str | None = None,
    storage_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> tune.ResultGrid:
    """Builds the Tuner (see `build_tuner` for the options) and runs it in
    `storage_path/name` (default `~/tunerl_results/<name or algo_env>_<time>`), noting there
    what `resume_sweep` needs."""
    name = name or f"{study_name(space)}_{time.strftime('%Y%m%d_%H%M%S')}"
    name = _UNSAFE_PATH_CHARS.sub("_", name)
    storage_path = Path(storage_path or default_storage_path()).absolute()
    experiment_dir = storage_path / name
    if tune.Tuner.can_restore(str(experiment_dir)):
        raise ConfigError(
            f"{experiment_dir} already holds a sweep: continue it with resume_sweep() "
            "(tunerl tune --resume) or choose another name."
        )
    tuner = build_tuner(space, name=name, storage_path=storage_path, **kwargs)
    experiment_dir.mkdir(parents=True, exist_ok=True)
    (experiment_dir / SWEEP_FILE).write_text(
        json.dumps(
            {
                "algo": space.algo,
                "env": space.env,
                "metric": space.metric,
                "mode": space.mode,
                "stop": kwargs.get("stop") or space.stop or DEFAULT_STOP,
                "search_space": str(space.path) if space.path else None,
            },
            indent=2,
        )
    )
    return tuner.fit()


def sweep_info(experiment_path: str | os.PathLike) -> dict[str, Any]:
    """What `run_sweep` noted about a sweep (algorithm, env, metric, mode, stop)."""
    path = Path(experiment_path) / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(
            f"{experiment_path} has no {SWEEP_FILE}: it was not started by tunerl's run_sweep "
            "(or `tunerl tune`)."
        )
    return json.loads(path.read_text())


def unfinished_trials(experiment_path: str | os.PathLike) -> int:
    """How many trials the sweep's saved state holds as not finished: those that an
    interrupted sweep was running or had yet to start, which `resume_sweep` runs."""
    from ray.tune import ExperimentAnalysis
    from ray.tune.experiment import Trial

    analysis = ExperimentAnalysis(str(Path(experiment_path).absolute()))
    return sum(trial.status not in (Trial.TERMINATED, Trial.ERROR) for trial in analysis.trials)


def resume_sweep(experiment_path: str | os.PathLike) -> tune.ResultGrid:
    """Continues an interrupted sweep from its directory: finished trials stay finished,
    unfinished (and errored) ones restart from their last checkpoint, trials not yet started
    start."""
    path = str(Path(experiment_path).absolute())
    info = sweep_info(path)
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"{path} holds no Tune experiment state to restore.")
    tuner = tune.Tuner.restore(
        path, trainable=algorithm_class(info["algo"]), resume_unfinished=True, resume_errored=True
    )
    return tuner.fit()
