"""Sweeps: a search space (or an experiment with one) run as a `tune.Tuner`.

Thin helpers over Tune, not a second scheduler: `build_tuner()` picks the search algorithm
(Optuna with a TPE, random, CMA-ES or GP sampler; random search; grid search), a scheduler
(ASHA, PBT, PB2 or none), checkpoint ranking and actor reuse, and returns the Tuner, which
the caller can still change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray import tune

from tunerl.core import metrics as m
from tunerl.core.config import ConfigError
from tunerl.tuning.search_space import SearchSpace

SEARCHES = ("optuna", "random", "grid")
SAMPLERS = ("tpe", "random", "cmaes", "gp")
SCHEDULERS = ("none", "asha", "pbt", "pb2")
DEFAULT_STOP = {m.NUM_ENV_STEPS_SAMPLED_LIFETIME: 100_000}


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
        return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"sampler {name!r} is not one of {SAMPLERS}.")


def make_scheduler(name: str, space: SearchSpace, stop: dict[str, float]):
    """ASHA on env steps; PBT and PB2 perturb the searched continuous fields (and PBT the
    choices) every few iterations."""
    if name == "none":
        return None
    budget = stop.get(m.NUM_ENV_STEPS_SAMPLED_LIFETIME)
    if name == "asha":
        from ray.tune.schedulers import ASHAScheduler

        if budget is None:
            return ASHAScheduler(time_attr="training_iteration", max_t=100, grace_period=5)
        return ASHAScheduler(
            time_attr=m.NUM_ENV_STEPS_SAMPLED_LIFETIME,
            max_t=int(budget),
            grace_period=max(1, int(budget // 8)),
            reduction_factor=2,
        )
    continuous = {
        p.name: p
        for p in space.params
        if p.distribution in ("uniform", "loguniform") and not p.when
    }
    if name == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        mutations = {
            p.name: p.tune_domain() if p.distribution != "grid" else list(p.args)
            for p in space.params
            if not p.when and p.distribution != "randint"
        }
        if not mutations:
            raise ConfigError(
                "PBT needs at least one unconditional uniform, loguniform or "
                "choice field in the search space."
            )
        return PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=5,
            hyperparam_mutations=mutations,
            quantile_fraction=0.5,
        )
    if name == "pb2":
        try:
            from ray.tune.schedulers.pb2 import PB2
        except ImportError as error:
            raise ConfigError(
                f"scheduler 'pb2' needs GPy and scikit-learn ({error}): pip install 'tunerl[tune]'."
            ) from None
        if not continuous:
            raise ConfigError("PB2 needs at least one unconditional uniform or loguniform field.")
        return PB2(
            time_attr="training_iteration",
            perturbation_interval=5,
            hyperparam_bounds={name: list(p.args) for name, p in continuous.items()},
            quantile_fraction=0.5,
        )
    raise ConfigError(f"scheduler {name!r} is not one of {SCHEDULERS}.")


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
) -> tune.Tuner:
    """A Tuner for `space`. `optuna_storage` ("sqlite:///study.db") keeps the Optuna study
    on disk, so it can be resumed and viewed with optuna-dashboard."""
    from tunerl import ALGORITHMS

    if search not in SEARCHES:
        raise ConfigError(f"search {search!r} is not one of {SEARCHES}.")
    stop = dict(stop or space.stop or DEFAULT_STOP)
    algo_class = ALGORITHMS[space.algo]
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
            study_name=name or f"{space.algo}_{space.env}",
            storage=storage,
        )
        param_space = space.base_config().to_dict()
    else:
        param_space = space.to_tune()
        if search == "random" and space.points_to_evaluate:
            from ray.tune.search import BasicVariantGenerator

            search_alg = BasicVariantGenerator(points_to_evaluate=space.points_to_evaluate)
        if search == "grid" and not space.has_grid:
            raise ConfigError("search='grid' needs at least one 'grid' field in the space.")
    if seed is not None:
        param_space["seed"] = seed
    return tune.Tuner(
        algo_class,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=make_scheduler(scheduler, space, stop),
            metric=space.metric,
            mode=space.mode,
            num_samples=num_samples if search != "grid" else 1,
            max_concurrent_trials=max_concurrent,
            reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(Path(storage_path).absolute()) if storage_path else None,
            stop=stop,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=num_to_keep,
                checkpoint_score_attribute=space.metric,
                checkpoint_score_order=space.mode,
                checkpoint_frequency=checkpoint_frequency,
                checkpoint_at_end=True,
            ),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=1,
        ),
    )


SWEEP_FILE = "tunerl_sweep.json"


def default_storage_path() -> Path:
    return Path(os.environ.get("TUNERL_RESULTS", Path.home() / "tunerl_results"))


def run_sweep(
    space: SearchSpace,
    *,
    name: str | None = None,
    storage_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> tune.ResultGrid:
    """Builds the Tuner (see `build_tuner`) and runs it in `storage_path/name` (default
    `~/tunerl_results/<algo>_<env>_<time>`), noting there what `resume_sweep` needs."""
    import json
    import time

    name = name or f"{space.algo}_{space.env.replace('/', '_')}_{time.strftime('%Y%m%d_%H%M%S')}"
    storage_path = Path(storage_path or default_storage_path()).absolute()
    experiment_dir = storage_path / name
    experiment_dir.mkdir(parents=True, exist_ok=True)
    (experiment_dir / SWEEP_FILE).write_text(
        json.dumps(
            {
                "algo": space.algo,
                "env": space.env,
                "metric": space.metric,
                "mode": space.mode,
                "search_space": str(space.path) if space.path else None,
            },
            indent=2,
        )
    )
    tuner = build_tuner(space, name=name, storage_path=storage_path, **kwargs)
    return tuner.fit()


def sweep_info(experiment_path: str | os.PathLike) -> dict[str, Any]:
    """What `run_sweep` noted about a sweep (algorithm, env, metric, mode)."""
    import json

    path = Path(experiment_path) / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(
            f"{experiment_path} has no {SWEEP_FILE}: it was not started by tunerl's run_sweep "
            "(or `tunerl tune`)."
        )
    return json.loads(path.read_text())


def resume_sweep(experiment_path: str | os.PathLike) -> tune.ResultGrid:
    """Continues an interrupted sweep from its directory: finished trials stay finished,
    unfinished ones restart from their last checkpoint."""
    from tunerl import ALGORITHMS

    path = str(Path(experiment_path).absolute())
    info = sweep_info(path)
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"{path} holds no Tune experiment state to restore.")
    tuner = tune.Tuner.restore(
        path, trainable=ALGORITHMS[info["algo"]], resume_unfinished=True, resume_errored=True
    )
    return tuner.fit()
