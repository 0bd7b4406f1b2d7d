"""Experiments as data: the file checks, one trial in this process, and the sweep an
experiment names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunerl.experiments import load_experiment, run_experiment

from .sweep_helpers import STEPS_KEY, TINY_CONFIG

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
TINY_EXPERIMENT = {
    "name": "tiny",
    "algo": "PPO",
    "env": "CartPole-v1",
    "config": {**TINY_CONFIG, "seed": 1},
    "stop": {"training_iteration": 2},
    "target": {"metric": "env_runners/episode_return_mean", "min": 5},
}


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_experiments_load(path):
    experiment = load_experiment(path)
    assert experiment.algo_config().env == experiment.env


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        ({"stopp": {}}, ["unknown key 'stopp'", "'stop'"]),
        ({"algo": "PP0"}, ["'PPO'"]),
        ({"target": {"metric": "env_runners/episode_return_mean"}}, ["'metric'", "'min'"]),
        ({"num_samples": 0}, ["num_samples must be a positive integer"]),
        ({"config": {"lrr": 1}}, ["config:", "'lr'"]),
        ({"stop": {"training_iteration": "two"}}, ["stop needs a mapping"]),
        ({"stop": {"training_iteration": float("nan")}}, ["stop.training_iteration", "finite"]),
        ({"stop": {"training_iteraton": 2}}, ["Did you mean 'training_iteration'?"]),
        ({"config": {"model_config": {"fcnet_hidden": [8]}}}, ["'fcnet_hiddens'"]),
    ],
)
def test_experiment_errors_name_the_file_and_key(tmp_path, change, fragments):
    path = write(tmp_path / "experiment.yaml", {**TINY_EXPERIMENT, **change})
    with pytest.raises(ValueError) as error:
        load_experiment(path)
    message = str(error.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_experiment_file_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_experiment(tmp_path / "missing.yaml")


def test_a_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text("algo: PPO\nenv: CartPole-v1\nstop: {training_iteration: 2\n")
    with pytest.raises(ValueError) as error:
        load_experiment(path)
    (line,) = str(error.value).splitlines()
    assert line.startswith(f"{path}:4:1: not valid YAML: "), line


def test_rllib_stop_key_is_mapped_and_a_stop_key_missing_from_results_is_refused(tmp_path):
    rllib = {**TINY_EXPERIMENT, "stop": {"episode_reward_mean": 5, "training_iteration": 2}}
    experiment = load_experiment(write(tmp_path / "r.yaml", rllib))
    assert experiment.stop == {"env_runners/episode_return_mean": 5, "training_iteration": 2}
    # A key under learners/ is only known once the algorithm reports: refused at the first
    # result, with the closest key that result holds.
    typo = {**TINY_EXPERIMENT, "stop": {"learners/default_policy/polcy_loss": 1.0}}
    with pytest.raises(ValueError) as error:
        run_experiment(write(tmp_path / "t.yaml", typo))
    message = str(error.value)
    assert "'learners/default_policy/polcy_loss' is not in the results" in message
    assert "Did you mean 'learners/default_policy/policy_loss'?" in message


def test_run_experiment_trains_one_trial_and_says_whether_it_reached_the_target(tmp_path):
    result = run_experiment(write(tmp_path / "e.yaml", TINY_EXPERIMENT))
    assert result["training_iteration"] == 2
    assert result["reached_target"] is True
    unreachable = {**TINY_EXPERIMENT, "target": {**TINY_EXPERIMENT["target"], "min": 10_000}}
    assert run_experiment(write(tmp_path / "u.yaml", unreachable))["reached_target"] is False
    # Overrides are config fields.
    assert run_experiment(write(tmp_path / "e.yaml", TINY_EXPERIMENT), lr=1e-2)[STEPS_KEY] > 0


def test_experiment_search_space_takes_the_experiment_config_and_stop(tmp_path):
    (tmp_path / "spaces").mkdir()
    write(
        tmp_path / "spaces" / "tiny_space.yaml",
        {
            "algo": "PPO",
            "env": "CartPole-v1",
            "config": {"num_envs_per_env_runner": 2},
            "stop": {"training_iteration": 99},
            "space": {"lr": {"loguniform": [1e-4, 1e-2]}},
        },
    )
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    data = {**TINY_EXPERIMENT, "search_space": "spaces/tiny_space.yaml", "num_samples": 1}
    experiment = load_experiment(write(experiments / "e.yaml", data))
    space = experiment.search_space()
    assert space.name == "tiny"
    assert space.stop == TINY_EXPERIMENT["stop"]
    # The experiment's config under the space's fixed fields.
    assert space.config["num_envs_per_env_runner"] == 2
    assert space.config["seed"] == 1
    other_env = load_experiment(write(experiments / "o.yaml", {**data, "env": "Acrobot-v1"}))
    with pytest.raises(ValueError, match="is for env 'CartPole-v1', the experiment for"):
        other_env.search_space()
    missing = load_experiment(write(experiments / "m.yaml", {**data, "search_space": "x.yaml"}))
    with pytest.raises(ValueError, match="search_space 'x.yaml' not found"):
        missing.search_space()


def test_run_experiment_runs_the_sweep_it_names(ray_cluster, tmp_path):
    write(
        tmp_path / "space.yaml",
        {"algo": "PPO", "env": "CartPole-v1", "space": {"lr": {"grid": [1e-3, 3e-4]}}},
    )
    data = {**TINY_EXPERIMENT, "search_space": "space.yaml", "num_samples": 1}
    results = run_experiment(
        write(tmp_path / "e.yaml", data),
        sweep=True,
        search="grid",
        storage_path=tmp_path / "results",
        verbose=0,
    )
    assert results.errors == []
    assert sorted(r.config["lr"] for r in results) == [3e-4, 1e-3]
    assert all(r.metrics["training_iteration"] == 2 for r in results)
    assert Path(results.experiment_path).name.startswith("tiny_")
