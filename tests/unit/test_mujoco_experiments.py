"""The MuJoCo experiments (experiments/mujoco/, benchmarks/mujoco_speed.py's settings) are
valid configs. They are read, not run: MuJoCo is an optional extra and too slow for CI, so they
live outside experiments/*.yaml, which the learning tests run."""

from pathlib import Path

import pytest

from tunerl.experiments import load_experiment

MUJOCO_EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "mujoco"


@pytest.mark.parametrize(
    "path", sorted(MUJOCO_EXPERIMENTS.glob("*.yaml")), ids=lambda path: path.name
)
def test_mujoco_experiment_is_a_valid_config(path):
    experiment = load_experiment(path)
    config = experiment.algo_config()
    config.validate()
    assert config.env == experiment.env
    assert config.model_config["fcnet_hiddens"] == [256, 256]
    assert experiment.stop["num_env_steps_sampled_lifetime"] > 0


def test_the_learning_tests_do_not_pick_up_the_mujoco_experiments():
    top_level = {path.stem for path in MUJOCO_EXPERIMENTS.parent.glob("*.yaml")}
    mujoco = {path.stem for path in MUJOCO_EXPERIMENTS.glob("*.yaml")}
    assert mujoco == {"sac_hopper", "sac_halfcheetah", "ppo_halfcheetah"}
    assert not top_level & mujoco
