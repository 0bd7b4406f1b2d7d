"""A Tune sweep over a multi-agent config: two trials of two modules each, stopped on a
per-module result key, ranked by the summed return, TensorBoard curves per module, and
checkpoints that hold one folder per module."""

from __future__ import annotations

from pathlib import Path

from ray import tune

from tunerl import PPO, PPOConfig
from tunerl.core import metrics as m
from tunerl.env.registry import register_env
from tunerl.examples.envs.classes.multi_agent import MultiAgentCartPole

from .sweep_helpers import event_files, read_events

register_env("tune_multi_agent_cartpole", lambda config: MultiAgentCartPole(config))


def test_a_sweep_over_a_multi_agent_config_reports_and_checkpoints_per_module(
    ray_cluster, tmp_path
):
    config = (
        PPOConfig()
        .environment("tune_multi_agent_cartpole", env_config={"num_agents": 2})
        .multi_agent(
            policies={"p0", "p1"},
            policy_mapping_fn=lambda agent_id, episode, **kwargs: f"p{agent_id}",
        )
        .training(
            lr=tune.grid_search([1e-3, 3e-4]),
            train_batch_size_per_learner=256,
            minibatch_size=64,
            num_epochs=1,
        )
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .debugging(seed=0)
    )
    per_module_key = f"{m.ENV_RUNNER_RESULTS}/{m.MODULE_EPISODE_RETURNS_MEAN}/p0"
    tuner = tune.Tuner(
        PPO,
        param_space=config,
        tune_config=tune.TuneConfig(metric=m.EPISODE_RETURN_MEAN_KEY, mode="max"),
        run_config=tune.RunConfig(
            # A per-module key as a stop criterion (Tune raises on a key a result lacks).
            stop={"training_iteration": 2, per_module_key: 1e9},
            storage_path=str(Path(tmp_path)),
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
        ),
    )
    results = tuner.fit()
    assert len(results) == 2 and not results.errors
    for result in results:
        metrics = result.metrics
        assert metrics["training_iteration"] == 2
        per_module = metrics[m.ENV_RUNNER_RESULTS][m.MODULE_EPISODE_RETURNS_MEAN]
        assert set(per_module) == {"p0", "p1"}
        assert set(metrics[m.LEARNER_RESULTS]) == {"p0", "p1"}
        (events_path,) = event_files(result.path)
        scalars = read_events(events_path)["scalars"]
        for module_id in ("p0", "p1"):
            assert (
                f"ray/tune/{m.ENV_RUNNER_RESULTS}/{m.MODULE_EPISODE_RETURNS_MEAN}/{module_id}"
                in scalars
            )
            assert f"ray/tune/{m.LEARNER_RESULTS}/{module_id}/{m.POLICY_LOSS}" in scalars
        with result.checkpoint.as_directory() as directory:
            modules = Path(directory) / "learner_group" / "learner" / "rl_module"
            assert sorted(p.name for p in modules.iterdir()) == ["p0", "p1"]
    best = results.get_best_result()
    assert best.metrics[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN] == max(
        r.metrics[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN] for r in results
    )
