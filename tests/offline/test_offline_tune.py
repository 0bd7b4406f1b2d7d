"""A Tune sweep over an offline algorithm: two BC trials on recorded data, ranked by their
evaluation return, each training without sampling (no extra actors in the trials)."""

from __future__ import annotations

from ray import tune

from tunerl.algorithms.bc import BCConfig
from tunerl.core import metrics as m

from .test_format import rllib_fixture


def test_a_tune_sweep_over_bc_ranks_trials_by_evaluation_return(tmp_path, ray_session):
    rllib_fixture(tmp_path / "data.parquet")
    config = (
        BCConfig()
        .environment("CartPole-v1")
        .offline_data(input_=str(tmp_path / "data.parquet"))
        .training(lr=tune.grid_search([1e-2, 1e-5]), train_batch_size_per_learner=64)
        .reporting(min_train_timesteps_per_iteration=1280)
        .evaluation(
            evaluation_interval=1, evaluation_duration=3, evaluation_config={"explore": False}
        )
        .debugging(seed=0)
    )
    tuner = tune.Tuner(
        "BC",
        param_space=config,
        tune_config=tune.TuneConfig(metric=m.EVALUATION_RETURN_MEAN_KEY, mode="max"),
        run_config=tune.RunConfig(stop={"training_iteration": 2}, storage_path=str(tmp_path)),
    )
    results = tuner.fit()
    assert not results.errors
    best = results.get_best_result()
    assert best.config["lr"] == 1e-2
    assert best.metrics[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] == 0
    assert best.metrics[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == 2 * 1280
