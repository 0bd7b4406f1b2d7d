"""Sweeps with real Ray Tune and Optuna at a tiny size: the issue's Python sweep, grid search
and actor reuse, Optuna with a persistent study, ASHA, PBT, PB2, resuming an interrupted sweep,
and the TensorBoard files every trial writes."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from tunerl import PPO
from tunerl.algorithms.ppo import PPOConfig
from tunerl.tuning import TensorBoardCallback, build_tuner, resume_sweep, run_sweep
from tunerl.tuning.sweep import SWEEP_FILE, study_name

from .sweep_helpers import (
    CURR_LR_KEY,
    GRID_LRS,
    RETURN_KEY,
    RETURN_TAG,
    STEPS_KEY,
    TINY_CONFIG,
    TINY_ITERATIONS,
    event_files,
    read_events,
    tiny_space,
)

pytestmark = pytest.mark.usefixtures("ray_cluster")
SPEC_STEPS = 768  # the issue's 100k env steps, at the tiny size


def trial_frames(results: tune.ResultGrid) -> list[pd.DataFrame]:
    """Every report of each trial, in trial order (progress.csv, as Tune wrote it)."""
    return [pd.read_csv(Path(result.path) / "progress.csv") for result in results]


def spec_config() -> PPOConfig:
    return (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_envs_per_env_runner=TINY_CONFIG["num_envs_per_env_runner"])
        .training(
            lr=tune.loguniform(1e-4, 3e-3),
            num_epochs=tune.randint(1, 3),
            train_batch_size_per_learner=TINY_CONFIG["train_batch_size_per_learner"],
            minibatch_size=TINY_CONFIG["minibatch_size"],
        )
        .rl_module(model_config=dict(TINY_CONFIG["model_config"]))
    )


def spec_tuner(config: PPOConfig, storage: Path) -> tune.Tuner:
    """The issue's Tuner, word for word but for the size."""
    return tune.Tuner(
        config.algo_class,
        param_space=config,
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(),
            metric="env_runners/episode_return_mean",
            mode="max",
            num_samples=2,
        ),
        run_config=tune.RunConfig(
            storage_path=str(storage),
            stop={
                "env_runners/episode_return_mean": 450,
                "num_env_steps_sampled_lifetime": SPEC_STEPS,
            },
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=2,
                checkpoint_score_attribute="env_runners/episode_return_mean",
                checkpoint_score_order="max",
            ),
        ),
    )


def test_issue_sweep_as_written(tmp_path):
    results = spec_tuner(spec_config(), tmp_path).fit()
    best = results.get_best_result().checkpoint

    assert results.errors == []
    assert len(results) == 2
    for result in results:
        assert 1e-4 <= result.config["lr"] <= 3e-3
        assert result.config["num_epochs"] in (1, 2)
        assert result.metrics[STEPS_KEY] >= SPEC_STEPS
        # Tune's default logger: one event file, HParams of the searched fields at the end.
        (events,) = event_files(result.path)
        assert set(read_events(events)["hparams"]) == {"lr", "num_epochs"}
    algo = PPO.from_checkpoint(best.path)
    try:
        assert algo.config.lr == results.get_best_result().config["lr"]
        assert algo.train()[STEPS_KEY] > SPEC_STEPS
    finally:
        algo.stop()


def test_grid_sweep_runs_every_point_in_one_reused_actor(grid_sweep):
    assert grid_sweep.errors == []
    assert sorted(result.config["lr"] for result in grid_sweep) == sorted(GRID_LRS)
    frames = trial_frames(grid_sweep)
    for frame in frames:
        assert frame["training_iteration"].tolist() == list(range(1, TINY_ITERATIONS + 1))
        assert frame[RETURN_KEY].notna().all()
    # max_concurrent=1 and reuse_actors=True: the second trial ran in the first one's process.
    assert len({pid for frame in frames for pid in frame["pid"]}) == 1
    # Each trial kept the learning rate of its grid point.
    for result, frame in zip(grid_sweep, frames):
        np.testing.assert_allclose(frame[CURR_LR_KEY], result.config["lr"])
    info = json.loads((Path(grid_sweep.experiment_path) / SWEEP_FILE).read_text())
    assert info["algo"] == "PPO" and info["stop"] == {"training_iteration": TINY_ITERATIONS}


def test_grid_sweep_best_checkpoint_restores_the_trial(grid_sweep):
    best = grid_sweep.get_best_result()
    algo = PPO.from_checkpoint(best.checkpoint.path)
    try:
        assert algo.iteration == TINY_ITERATIONS
        assert algo.config.lr == best.config["lr"]
        assert algo.config.model_config == best.config["model_config"]
    finally:
        algo.stop()


def test_every_trial_writes_one_event_file_with_curves_and_hparams(grid_sweep):
    for result in grid_sweep:
        (path,) = event_files(result.path)  # one set: Tune's default logger was replaced
        events = read_events(path)
        hidden = result.config["model_config"]["fcnet_hiddens"]
        assert events["hparams"] == {
            "lr": pytest.approx(result.config["lr"]),
            # Tune's own logger leaves list values out; they are shown as text.
            "model_config/fcnet_hiddens": json.dumps(hidden),
        }
        assert RETURN_TAG in events["metrics"]
        curve = events["scalars"][RETURN_TAG]
        assert [step for step, _ in curve] == list(range(1, TINY_ITERATIONS + 1))
        assert events["scalars"]["ray/tune/config/lr"][-1][1] == pytest.approx(result.config["lr"])
        assert events["session_end"] == 1  # STATUS_SUCCESS


def test_optuna_sweep_starts_with_the_given_point_and_keeps_its_study(ray_cluster, tmp_path):
    space = tiny_space(
        {"lr": {"loguniform": [1e-4, 3e-3]}, "gamma": {"uniform": [0.95, 0.99]}},
        points_to_evaluate=[{"lr": 1e-3, "gamma": 0.97}],
        stop={"training_iteration": 1},
    )
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    options = dict(storage_path=tmp_path, optuna_storage=storage, seed=3, verbose=0)
    # Given on its own, the TensorBoard callback shows what the searcher suggested.
    first = run_sweep(
        space,
        name="first",
        num_samples=2,
        max_concurrent=1,
        callbacks=[TensorBoardCallback()],
        **options,
    )
    assert first.errors == []
    configs = sorted((result.config["lr"], result.config["gamma"]) for result in first)
    assert (1e-3, 0.97) in configs
    assert all(result.config["seed"] == 3 for result in first)
    for result in first:
        (events,) = event_files(result.path)
        assert read_events(events)["hparams"] == {
            "lr": pytest.approx(result.config["lr"]),
            "gamma": pytest.approx(result.config["gamma"]),
        }
    # A second sweep of the same space continues the study on disk.
    second = run_sweep(space, name="second", num_samples=1, **options)
    assert second.errors == []
    study = optuna.load_study(study_name=study_name(space), storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    assert all(math.isfinite(t.value) for t in done)


def test_run_sweep_refuses_to_overwrite_a_sweep(grid_sweep):
    path = Path(grid_sweep.experiment_path)
    with pytest.raises(ValueError, match="already holds a sweep: continue it with resume_sweep"):
        run_sweep(tiny_space({"lr": {"grid": GRID_LRS}}), name=path.name, storage_path=path.parent)


def test_asha_stops_the_bad_trial_early(tmp_path):
    config = {**TINY_CONFIG, "seed": 1, "metrics_num_episodes_for_smoothing": 20}
    space = tiny_space({"lr": {"grid": [1e-2, 1e-7]}}, config=config)
    results = run_sweep(
        space,
        name="asha",
        storage_path=tmp_path,
        search="grid",
        scheduler="asha",
        max_concurrent=1,  # the good trial sets the bar at each rung first
        stop={"training_iteration": 8},
        verbose=0,
    )
    assert results.errors == []
    steps = {result.config["lr"]: result.metrics[STEPS_KEY] for result in results}
    iterations = {result.config["lr"]: result.metrics["training_iteration"] for result in results}
    assert iterations[1e-2] == 8
    assert iterations[1e-7] < 8
    assert steps[1e-7] < steps[1e-2]


def test_pbt_perturbs_a_running_trial_and_training_continues(tmp_path):
    space = tiny_space(
        {"lr": {"loguniform": [1e-4, 1e-2]}, "gamma": {"uniform": [0.95, 0.99]}},
        stop={"training_iteration": 4},
    )
    results = run_sweep(
        space,
        name="pbt",
        storage_path=tmp_path,
        search="random",
        scheduler="pbt",
        num_samples=2,
        perturbation_interval=2,
        seed=0,
        verbose=0,
    )
    assert results.errors == []
    lines = (Path(results.experiment_path) / "pbt_global.txt").read_text().splitlines()
    assert len(lines) == 1  # one perturbation point (iteration 2) before the stop at 4
    target_tag, clone_tag, _, _, clone_config, new_config = json.loads(lines[0])
    assert clone_tag != target_tag
    assert new_config["lr"] != clone_config["lr"]
    # PBT's explore step may scale gamma out of its range; it is clipped back into it.
    assert 0.95 <= new_config["gamma"] <= 0.99
    # A perturbed trial's tag is its first tag with the perturbation appended.
    (target,) = [r for r in results if r.metrics["experiment_tag"].startswith(target_tag)]
    frame = pd.read_csv(Path(target.path) / "progress.csv")
    assert frame["training_iteration"].tolist() == [1, 2, 3, 4]
    # The trial trained with its own lr, then, in the same trial, with the mutated one.
    lrs = frame[CURR_LR_KEY].tolist()
    assert lrs[0] == lrs[1] != pytest.approx(new_config["lr"])
    assert lrs[2] == pytest.approx(new_config["lr"]) == lrs[3]
    assert target.config["lr"] == pytest.approx(new_config["lr"])
    # It went on from the copied checkpoint: its env steps kept growing.
    steps = frame[STEPS_KEY].tolist()
    assert steps[3] > steps[2] > steps[1] > steps[0]


def test_pb2_runs_and_perturbs_within_the_bounds(tmp_path):
    space = tiny_space(
        {"lr": {"loguniform": [1e-4, 1e-2]}, "gamma": {"uniform": [0.95, 0.99]}},
        stop={"training_iteration": 4},
    )
    results = run_sweep(
        space,
        name="pb2",
        storage_path=tmp_path,
        search="random",
        scheduler="pb2",
        num_samples=2,
        perturbation_interval=2,
        seed=0,
        verbose=0,
    )
    assert results.errors == []
    assert [result.metrics["training_iteration"] for result in results] == [4, 4]
    lines = (Path(results.experiment_path) / "pbt_global.txt").read_text().splitlines()
    assert lines
    for line in lines:
        new_config = json.loads(line)[5]
        assert 1e-4 <= new_config["lr"] <= 1e-2
        assert 0.95 <= new_config["gamma"] <= 0.99


class InterruptOnce(tune.Callback):
    """Sends this process SIGINT (Ctrl+C) at the first trial's second report, once: Tune
    then saves the experiment state and returns, as on a real interruption."""

    def __init__(self, marker: Path):
        self.marker = marker

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result["training_iteration"] == 2 and not self.marker.exists():
            self.marker.touch()  # Tune restores this callback with the experiment
            signal.raise_signal(signal.SIGINT)


def test_resume_sweep_finishes_an_interrupted_sweep(tmp_path):
    space = tiny_space({"lr": {"grid": GRID_LRS}})
    results = run_sweep(
        space,
        name="interrupted",
        storage_path=tmp_path,
        search="grid",
        max_concurrent=1,
        checkpoint_frequency=1,
        callbacks=[InterruptOnce(tmp_path / "interrupted.marker")],
        verbose=0,
    )
    assert results.num_terminated < 2  # the sweep stopped part-way
    resumed = resume_sweep(results.experiment_path)
    assert resumed.errors == []
    assert resumed.num_terminated == 2
    assert sorted(result.config["lr"] for result in resumed) == sorted(GRID_LRS)
    for result in resumed:
        assert result.metrics["training_iteration"] == TINY_ITERATIONS
        frame = pd.read_csv(Path(result.path) / "progress.csv")
        assert frame["training_iteration"].max() == TINY_ITERATIONS


def test_resume_sweep_needs_a_tunerl_sweep(tmp_path):
    with pytest.raises(ValueError, match="was not started by tunerl's run_sweep"):
        resume_sweep(tmp_path)


def test_build_tuner_rejects_impossible_combinations():
    optuna_grid = tiny_space({"lr": {"grid": GRID_LRS}})
    with pytest.raises(ValueError, match="Optuna cannot search"):
        build_tuner(optuna_grid, search="optuna")
    no_grid = tiny_space({"lr": {"uniform": [1e-4, 1e-3]}})
    with pytest.raises(ValueError, match="needs at least one 'grid' field"):
        build_tuner(no_grid, search="grid")
    with pytest.raises(ValueError, match=r"search 'bayes' is not one of"):
        build_tuner(no_grid, search="bayes")
    with pytest.raises(ValueError, match=r"scheduler 'hyperband' is not one of"):
        build_tuner(no_grid, search="random", scheduler="hyperband")
    choice_only = tiny_space({"num_epochs": {"choice": [1, 2]}})
    with pytest.raises(ValueError, match="'pb2' needs at least one unconditional uniform"):
        build_tuner(choice_only, search="random", scheduler="pb2")
    with pytest.raises(ValueError, match="num_samples=0"):
        build_tuner(no_grid, num_samples=0)


def test_reset_config_keeps_env_runners_when_only_learner_fields_change(tiny_config, build):
    """What PBT relies on: a mutated lr reaches the learner without new runners."""
    algo = build(tiny_config(seed=1))
    algo.train()
    runners = algo.env_runner_group
    assert algo.reset_config(tiny_config(seed=1, lr=5e-4).to_dict())
    assert algo.env_runner_group is runners
    assert algo.train()["learners"]["default_policy"]["curr_lr"] == pytest.approx(5e-4)
    assert algo.reset_config(
        tiny_config(seed=1, lr=5e-4).env_runners(num_envs_per_env_runner=3).to_dict()
    )
    assert algo.env_runner_group is not runners


def test_sweep_results_carry_plain_dict_configs(grid_sweep):
    for result in grid_sweep:
        lines = (Path(result.path) / "result.json").read_text().splitlines()
        assert isinstance(json.loads(lines[-1])["config"], dict)
