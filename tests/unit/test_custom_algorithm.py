"""Custom algorithms from public objects: the seeds' hand-written loop on remote runners
(sample on every runner, concatenate, update, put `{module_id: weights}` once, set them on
each), RLlib's `training_step` helpers, and the two examples written as a Learner's pieces in
at most 40 lines, `tunerl.examples.vpg` (REINFORCE) and `tunerl.examples.a2c` (A2C): each
trains in this process and on remote runners, restores from a checkpoint and continues
identically, runs under `tune.Tuner`, and learns CartPole-v1 as its experiment file says."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from ray import tune

import tunerl
import tunerl.examples.a2c
import tunerl.examples.vpg
from tests.contract.helpers import assert_same_weights, weights
from tunerl import Algorithm, MultiAgentBatch, SampleBatch
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.examples.a2c import A2C, A2CConfig
from tunerl.examples.vpg import VPG, VPGConfig
from tunerl.execution import synchronous_parallel_sample, train_one_step

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
# An episode id holds its runner's index in the bits above these (tunerl.core.env_runner).
EPS_ID_RUNNER_SHIFT = 40
MAX_EXAMPLE_LINES = 40
# name -> (algorithm, its example module); the name is the one its experiment file uses.
EXAMPLES = {"VPG": (VPG, tunerl.examples.vpg), "A2C": (A2C, tunerl.examples.a2c)}
NAMES = sorted(EXAMPLES)
# Stats each example's loss reports under learners/default_policy/.
LOSS_STATS = {"VPG": {"policy_loss", "entropy"}, "A2C": {"policy_loss", "vf_loss", "entropy"}}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # address="local": a new instance of our own, even when another Ray runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def tiny(name: str, seed: int = 0, num_env_runners: int = 0, **training) -> VPGConfig | A2CConfig:
    """The example's defaults with two sub-envs, 64 env steps per update and one hidden layer
    of 16 units: an iteration in a fraction of a second."""
    algo_class, _ = EXAMPLES[name]
    return (
        algo_class.config_class()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=2)
        .training(**{"train_batch_size_per_learner": 64, **training})
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .debugging(seed=seed)
    )


def policy_outputs(algo: Algorithm, obs: torch.Tensor) -> list[torch.Tensor]:
    """What every remote runner's acting module computes for `obs`."""
    return algo.env_runner_group.foreach_env_runner(
        lambda runner: runner.policy.forward_inference({c.OBS: obs})[c.ACTION_DIST_INPUTS]
    )


def seeded_obs() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.as_tensor(rng.uniform(-0.5, 0.5, (8, 4)), dtype=torch.float32)


# ---------------------------------------------------------------- the seeds' loop
def test_the_hand_written_loop_on_two_remote_runners(local_ray, build):
    algo = build(tiny("VPG", seed=3, num_env_runners=2))
    group, module = algo.env_runner_group, algo.get_module()
    obs = seeded_obs()
    before = policy_outputs(algo, obs)

    # 1. sample on every runner, in parallel; 2. one batch.
    workers = group.remote_workers()
    batches = ray.get([w.sample.remote() for w in workers])
    batch = SampleBatch.concat_samples(batches)
    # 3. an update: the learner's postprocessing (returns-to-go), loss and optimizer step.
    stats = algo.learner.update(batch)
    # 4. the weights keyed by module id into the object store once; every runner gets the
    # reference.
    weights_ref = ray.put({"default_policy": module.get_state()})
    ray.get([w.set_weights.remote(weights_ref) for w in workers])

    # sample() without arguments: rollout_fragment_length 'auto' splits the train batch (64
    # env steps) over 2 runners x 2 sub-envs, 16 steps each; a step in which a sub-env
    # resets adds no row, so a runner may step once more.
    assert algo.config.get_rollout_fragment_length() == 16
    assert isinstance(batch, MultiAgentBatch)
    assert batch.module_ids() == [c.DEFAULT_MODULE_ID]
    for index, runner_batch in enumerate(batches, start=1):
        rows = runner_batch[c.DEFAULT_MODULE_ID]
        assert 32 <= len(rows) <= 32 + 2
        assert set(rows[c.EPS_ID] >> EPS_ID_RUNNER_SHIFT) == {index}
    assert len(batch) == len(batch[c.DEFAULT_MODULE_ID]) == sum(len(b) for b in batches)
    metrics = ray.get([w.get_metrics.remote() for w in workers])
    assert [runner["num_env_steps"] for runner in metrics] == [len(b) for b in batches]
    assert set(stats) == {c.DEFAULT_MODULE_ID}
    assert math.isfinite(stats[c.DEFAULT_MODULE_ID]["policy_loss"])

    expected = module.forward_inference({c.OBS: obs})[c.ACTION_DIST_INPUTS]
    after = policy_outputs(algo, obs)
    for runner_before, runner_after in zip(before, after):
        assert not torch.allclose(runner_before, runner_after)
        torch.testing.assert_close(runner_after, expected)
    learner_state = module.get_state()
    for runner_weights in ray.get([w.get_weights.remote() for w in workers]):
        assert set(runner_weights) == {c.DEFAULT_MODULE_ID}
        for name, value in learner_state.items():
            assert torch.equal(runner_weights[c.DEFAULT_MODULE_ID][name], value), name


def test_synchronous_parallel_sample_counts_what_it_samples(local_ray, tiny_config, build):
    group = build(tiny_config(seed=4).env_runners(num_env_runners=2)).env_runner_group
    group.pop_metrics()

    one_round = synchronous_parallel_sample(worker_set=group)
    by_steps = synchronous_parallel_sample(env_runner_group=group, max_env_steps=100)
    by_episodes = synchronous_parallel_sample(worker_set=group, max_episodes=3, explore=False)

    assert 256 <= len(one_round) <= 256 + 4
    assert 100 <= len(by_steps) <= 100 + 4
    episode_rows = by_episodes[c.DEFAULT_MODULE_ID]
    episodes = episode_rows.split_by_episode()
    assert len(episodes) == 3
    assert all(e[c.TERMINATEDS][-1] or e[c.TRUNCATEDS][-1] for e in episodes)
    np.testing.assert_array_equal(
        episode_rows[c.ACTIONS], episode_rows[c.ACTION_DIST_INPUTS].argmax(-1)
    )
    metrics = group.pop_metrics()
    assert len(metrics["episode_returns"]) >= 3
    assert metrics["num_env_steps"] >= len(one_round) + len(by_steps) + len(by_episodes)


def test_synchronous_parallel_sample_takes_one_limit(tiny_config, build):
    group = build(tiny_config()).env_runner_group
    with pytest.raises(ValueError, match="not both"):
        synchronous_parallel_sample(worker_set=group, max_env_steps=10, max_episodes=1)
    with pytest.raises(TypeError, match="env_runner_group"):
        synchronous_parallel_sample(max_env_steps=10)


def test_train_one_step_updates_counts_and_reports_learner_stats(tiny_config, build):
    algo = build(tiny_config(seed=2))
    batch = synchronous_parallel_sample(worker_set=algo.env_runner_group, max_env_steps=64)
    before = weights(algo)

    results = train_one_step(algo, batch)

    assert set(results) == {"learners"}
    assert set(results["learners"]) == {c.DEFAULT_MODULE_ID}
    assert math.isfinite(results["learners"][c.DEFAULT_MODULE_ID]["policy_loss"])
    assert algo.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == len(batch)
    after = weights(algo)
    assert any(not torch.equal(before[k], after[k]) for k in before)


class WholeEpisodesVPG(VPG):
    """RLlib's hand-written training_step: sample -> train_one_step -> sync_weights, here
    sampling whole episodes (so no return-to-go is cut by a fragment's end)."""

    def training_step(self) -> dict:
        batch = synchronous_parallel_sample(worker_set=self.env_runner_group, max_episodes=4)
        results = train_one_step(self, batch)
        self.sync_weights()
        return results


def test_a_training_step_from_rllibs_helpers():
    # In this process: runner actors could not unpickle a class defined in a test module.
    algo = WholeEpisodesVPG(config=tiny("VPG", seed=5))
    try:
        results = [algo.train() for _ in range(2)]
    finally:
        algo.stop()
    for iteration, result in enumerate(results, start=1):
        assert result[m.NUM_EPISODES_LIFETIME] == 4 * iteration
        assert result[m.ENV_RUNNER_RESULTS][m.NUM_EPISODES] == 4
        sampled = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        assert result[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == sampled
        assert result[m.TIMERS][m.LEARN_TIMER] > 0
        assert math.isfinite(result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]["policy_loss"])


# ------------------------------------------------------------------------ the examples
@pytest.mark.parametrize("name", NAMES)
def test_an_example_is_a_learners_pieces_in_at_most_40_lines(name):
    algo_class, module = EXAMPLES[name]
    source = Path(module.__file__).read_text()
    assert len(source.splitlines()) <= MAX_EXAMPLE_LINES
    # The Algorithm's own training_step and update run it: the example adds the pieces.
    assert algo_class.training_step is Algorithm.training_step
    learner_class = algo_class.learner_class
    assert "compute_loss_for_module" in vars(learner_class)
    assert "postprocess_batch" in vars(learner_class)
    assert algo_class.config_class().algo_class is algo_class


def check_results(name: str, results: list[dict]) -> None:
    """Every sampled env step is trained on, the counters add up, the loss's stats are
    reported."""
    for result in results:
        sampled = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        assert result[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == sampled
        assert result[m.ENV_RUNNER_RESULTS][m.NUM_ENV_STEPS_SAMPLED] >= 64
        stats = result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]
        assert LOSS_STATS[name] <= set(stats)
        assert all(math.isfinite(stats[key]) for key in LOSS_STATS[name])
    per_iteration = [r[m.ENV_RUNNER_RESULTS][m.NUM_ENV_STEPS_SAMPLED] for r in results]
    lifetime = [r[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] for r in results]
    assert np.cumsum(per_iteration).tolist() == lifetime
    assert results[-1][m.NUM_EPISODES_LIFETIME] > 0


@pytest.mark.parametrize("name", NAMES)
def test_an_example_trains_in_this_process(name, build):
    algo = build(tiny(name, seed=1))
    assert algo.env_runner_group.local_env_runner is not None
    before = weights(algo)
    results = [algo.train() for _ in range(3)]
    check_results(name, results)
    assert results[-1][m.TIMERS][m.LEARN_TIMER] > 0
    assert any(not torch.equal(value, weights(algo)[key]) for key, value in before.items())


def test_vpg_without_its_baseline_weighs_actions_by_the_raw_returns(build):
    """The same seed and batch: centring and scaling the returns changes the step taken."""
    steps = {}
    for baseline in (True, False):
        algo = build(tiny("VPG", seed=1, baseline=baseline))
        before = weights(algo)
        result = algo.train()
        steps[baseline] = {key: weights(algo)[key] - value for key, value in before.items()}
        assert math.isfinite(result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]["policy_loss"])
    assert any(not torch.allclose(steps[True][key], steps[False][key]) for key in steps[True])


@pytest.mark.parametrize("name", NAMES)
def test_an_example_trains_on_two_remote_runners(name, local_ray, build):
    algo = build(tiny(name, seed=1, num_env_runners=2))
    assert len(algo.env_runner_group.remote_workers()) == 2
    check_results(name, [algo.train() for _ in range(3)])
    learner_state = algo.get_module().get_state()
    for runner_weights in algo.env_runner_group.foreach_env_runner(lambda r: r.get_weights()):
        assert_same_weights(runner_weights[c.DEFAULT_MODULE_ID], learner_state)


def comparable(result: dict) -> dict:
    """The parts of a result that depend on the seed, not on the clock."""
    keys = (m.LEARNER_RESULTS, m.NUM_ENV_STEPS_SAMPLED_LIFETIME, m.NUM_EPISODES_LIFETIME)
    return {key: result[key] for key in (*keys, "training_iteration")}


@pytest.mark.parametrize("name", NAMES)
def test_an_example_restores_from_a_checkpoint_and_continues_identically(name, build, tmp_path):
    """Two restores of one checkpoint continue identically: same results, same weights (the
    envs are not in a checkpoint, so both start new episodes)."""
    algo_class, _ = EXAMPLES[name]
    algo = build(tiny(name, seed=2, lr=3e-3))
    for _ in range(2):
        algo.train()
    path = algo.save_to_path(tmp_path / "checkpoint")
    saved_weights = weights(algo)

    runs = []
    for _ in range(2):
        restored = Algorithm.from_checkpoint(path)
        try:
            assert type(restored) is algo_class
            assert restored.iteration == 2
            assert restored.config == algo.config
            assert_same_weights(weights(restored), saved_weights)
            runs.append(([comparable(restored.train()) for _ in range(2)], weights(restored)))
        finally:
            restored.stop()
    (first, first_weights), (second, second_weights) = runs
    assert [result["training_iteration"] for result in first] == [3, 4]
    assert first == second
    assert_same_weights(first_weights, second_weights)
    assert any(not torch.equal(saved_weights[k], first_weights[k]) for k in saved_weights)


@pytest.mark.parametrize("name", NAMES)
def test_an_example_runs_under_tune(name, local_ray, tmp_path):
    algo_class, _ = EXAMPLES[name]
    lrs = [1e-3, 3e-3]
    tuner = tune.Tuner(
        algo_class,
        param_space=tiny(name, seed=1).training(lr=tune.grid_search(lrs)),
        run_config=tune.RunConfig(
            stop={"training_iteration": 2}, storage_path=str(tmp_path), verbose=0
        ),
    )
    grid = tuner.fit()
    assert grid.errors == []
    assert sorted(result.config["lr"] for result in grid) == lrs
    for result in grid:
        assert result.metrics["training_iteration"] == 2
    frame = grid.get_dataframe()
    assert frame["num_env_steps_sampled_lifetime"].min() >= 2 * 64
    for stat in LOSS_STATS[name]:
        assert frame[f"learners/default_policy/{stat}"].notna().all()
