"""APPO and IMPALA: tiny runs with the local runner and with remote runners sampling
asynchronously, sampled and trained step counts, the target network, weight broadcasts,
a restarted runner, checkpoints that continue exactly, config errors, and the LearnerGroup
and LearnerThread they train through."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import torch

import tunerl
from tunerl import APPO, IMPALA, APPOConfig, Callbacks, ConfigError, IMPALAConfig
from tunerl.algorithms.appo.appo import APPOLearner
from tunerl.algorithms.impala.impala import policy_logp
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch
from tunerl.execution.async_sampling import AsyncSampler
from tunerl.execution.learner_group import LearnerGroup
from tunerl.execution.learner_thread import LearnerThread, LearnerThreadError

TRAIN_BATCH = 128
MODULE = c.DEFAULT_MODULE_ID


def tiny_config(
    config_class: type = APPOConfig, num_env_runners: int = 0, seed: int = 0, **training: Any
) -> APPOConfig:
    """One update of 128 env steps (two sub-envs) per training step, minibatches of 64."""
    settings = {
        "train_batch_size_per_learner": TRAIN_BATCH,
        "minibatch_size": 64,
        "num_epochs": 1,
        "lr": 1e-3,
        **training,
    }
    return (
        config_class()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=2)
        .training(**settings)
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .debugging(seed=seed)
    )


def parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def all_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def assert_counts(result: dict, num_updates: int) -> None:
    """Every sampled step is trained, once, in updates of at least a train batch."""
    sampled = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    assert result[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == sampled
    assert sampled >= num_updates * TRAIN_BATCH
    assert result[m.NUM_EPISODES_LIFETIME] > 0


def counters_after_drain(algo) -> dict:
    """The algorithm's counters once the learner thread trained every batch it was given
    (`get_module()` waits for it), as they would be reported."""
    algo.get_module()
    return dict(algo.counters)


def learner_threads_alive() -> int:
    return sum(t.name == "tunerl-learner" and t.is_alive() for t in threading.enumerate())


# ------------------------------------------------------------------ the local runner
@pytest.mark.parametrize("config_class", [APPOConfig, IMPALAConfig])
def test_trains_with_the_local_runner_and_reports_its_stats(config_class, build):
    algo = build(tiny_config(config_class))

    results = [algo.train() for _ in range(3)]

    assert algo.async_learning.sampler is None
    stats = results[-1][m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]
    for key in (m.POLICY_LOSS, m.VF_LOSS, m.ENTROPY, m.VF_EXPLAINED_VAR, m.GRAD_NORM):
        assert np.isfinite(stats[key]), key
    assert_counts(results[-1], 3)
    # The local runner samples the train batch per training step (plus at most one more
    # vector step, whose sub-envs' rows all count).
    for result in results:
        assert (
            TRAIN_BATCH <= result[m.ENV_RUNNER_RESULTS][m.NUM_ENV_STEPS_SAMPLED] < TRAIN_BATCH + 2
        )


def test_impala_with_the_local_runner_is_on_policy(build):
    class KeepBatch(Callbacks):
        def on_sample_end(self, *, algorithm, samples, **kwargs):
            algorithm.last_batch = samples[MODULE].copy()
            algorithm.logp_before_update = policy_logp(algorithm.get_module(), samples[MODULE])

    algo = build(tiny_config(IMPALAConfig).callbacks(KeepBatch))
    algo.train()

    # Sampled with the learner's own module: behaviour = target policy, rho = 1.
    np.testing.assert_allclose(
        algo.logp_before_update, algo.last_batch[c.ACTION_LOGP], rtol=1e-5, atol=1e-6
    )


def test_appo_learns_a_continuous_action_space(build):
    config = tiny_config().environment("Pendulum-v1")
    algo = build(config)
    result = algo.train()
    assert np.isfinite(result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID][m.POLICY_LOSS])


# ------------------------------------------------------------------ target network
def test_target_network_follows_the_online_one_every_update_freq_steps(build):
    algo = build(tiny_config(target_network_update_freq=2 * TRAIN_BATCH))
    learner = algo.learner
    online, target = learner.module[MODULE], learner.target_modules[MODULE]
    initial = parameters(online)

    algo.train()  # 128 trained steps: not yet
    assert all_equal(parameters(target), initial)
    assert not all_equal(parameters(online), initial)

    algo.train()  # 256: copied after the update
    assert all_equal(parameters(target), parameters(online))
    assert learner.steps_since_target_update[MODULE] == 0


def test_soft_target_updates_move_the_target_by_tau(build):
    algo = build(tiny_config(tau=0.25))
    learner = algo.learner
    target_before = parameters(learner.target_modules[MODULE])

    algo.train()

    online = parameters(learner.module[MODULE])
    expected = [t + 0.25 * (o - t) for t, o in zip(target_before, online)]
    for actual, wanted in zip(parameters(learner.target_modules[MODULE]), expected):
        torch.testing.assert_close(actual, wanted)


def test_kl_coefficient_adapts_when_the_kl_loss_is_on(build):
    algo = build(tiny_config(use_kl_loss=True, kl_coeff=0.5, kl_target=1e-9, num_epochs=2))
    result = algo.train()
    stats = result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]
    assert stats[m.MEAN_KL_LOSS] > 2e-9  # the policy moved from the target ...
    assert algo.learner.kl_coeffs[MODULE] == pytest.approx(0.75)  # ... so the penalty grew by 1.5
    assert stats[m.CURR_KL_COEFF] == pytest.approx(0.75)


# ------------------------------------------------------------------------ checkpoints
def test_checkpoint_restores_the_target_network_and_two_restores_continue_identically(
    build, tmp_path
):
    algo = build(tiny_config(use_kl_loss=True, target_network_update_freq=10_000))
    for _ in range(2):
        algo.train()
    path = Path(algo.save_to_path(tmp_path / "checkpoint"))

    first, second = APPO.from_checkpoint(path), APPO.from_checkpoint(path)
    try:
        for restored in (first, second):
            assert all_equal(
                parameters(restored.learner.target_modules[MODULE]),
                parameters(algo.learner.target_modules[MODULE]),
            )
            assert restored.learner.kl_coeffs == algo.learner.kl_coeffs
            assert restored.learner.steps_since_target_update == (
                algo.learner.steps_since_target_update
            )
            assert restored.learner.steps_since_target_update[MODULE] >= 2 * TRAIN_BATCH
        first_results = [first.train() for _ in range(2)]
        second_results = [second.train() for _ in range(2)]
        for a, b in zip(first_results, second_results):
            assert a[m.LEARNER_RESULTS] == b[m.LEARNER_RESULTS]
            assert a[m.ENV_RUNNER_RESULTS] == b[m.ENV_RUNNER_RESULTS]
            assert a[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] == b[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        assert [r["training_iteration"] for r in first_results] == [3, 4]
        assert all_equal(parameters(first.get_module()), parameters(second.get_module()))
    finally:
        first.stop()
        second.stop()


# ------------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    "field, value",
    [
        ("vtrace_clip_rho_threshold", 0.0),
        ("vtrace_clip_pg_rho_threshold", -1.0),
        ("broadcast_interval", 0),
        ("clip_param", 0),
        ("tau", 1.5),
        ("target_network_update_freq", 0),
        ("entropy_coeff", -0.1),
    ],
)
def test_a_bad_value_names_the_field_the_value_and_the_rule(field, value):
    with pytest.raises(ConfigError, match=field) as error:
        APPOConfig().training(**{field: value})
    assert repr(value) in str(error.value) and "must be" in str(error.value)


def test_impala_has_no_appo_fields_and_both_are_registered():
    for appo_field in ("clip_param", "tau", "target_network_update_freq", "use_kl_loss"):
        with pytest.raises(ConfigError, match=appo_field):
            IMPALAConfig().training(**{appo_field: 0.3})
    assert tunerl.ALGORITHMS["APPO"] is APPO and tunerl.ALGORITHMS["IMPALA"] is IMPALA


# ------------------------------------------------------------------- remote runners
@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("config_class", [APPOConfig, IMPALAConfig])
@pytest.mark.parametrize("num_env_runners", [1, 2])
def test_trains_with_remote_runners_sampling_asynchronously(
    local_ray, build, config_class, num_env_runners
):
    algo = build(tiny_config(config_class, num_env_runners))

    results = [algo.train() for _ in range(3)]

    assert isinstance(algo.async_learning.sampler, AsyncSampler)
    assert algo.async_learning.learner_group.has_thread and learner_threads_alive() == 1
    for result in results:
        assert result[m.ENV_RUNNER_RESULTS][m.NUM_ENV_STEPS_SAMPLED] >= TRAIN_BATCH
        assert 0 <= result[m.TIMERS][m.SAMPLE_WAIT_TIMER] <= result[m.TIMERS][m.SAMPLE_TIMER]
        # The learner thread trains the newest batch while the next is collected.
        assert result[m.NUM_ENV_STEPS_TRAINED_LIFETIME] < result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    assert_counts(counters_after_drain(algo), 3)
    assert np.isfinite(results[-1][m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN])


def test_without_the_learner_thread_each_step_trains_its_own_batch(local_ray, build):
    algo = build(tiny_config(num_env_runners=1, learner_queue_size=0))

    results = [algo.train() for _ in range(2)]

    assert not algo.async_learning.learner_group.has_thread
    assert_counts(results[-1], 2)
    assert all(m.POLICY_LOSS in r[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID] for r in results)


def test_batches_come_from_every_runner_and_requests_stay_in_flight(local_ray, build):
    algo = build(tiny_config(num_env_runners=2, learner_queue_size=0))
    sampler = algo.async_learning.sampler
    runners = set()
    for _ in range(10):
        for batch in sampler.collect(timeout_s=60):
            assert isinstance(batch, MultiAgentBatch)
            runners |= set((batch[MODULE][c.EPS_ID] >> 40).tolist())
        assert set(sampler._in_flight) == {1, 2}  # re-issued at once
    assert runners == {1, 2}


def test_with_the_learner_thread_a_runner_is_asked_again_after_the_next_update(local_ray, build):
    # So it samples with weights one update old: the update on the batch before its last.
    algo = build(tiny_config(num_env_runners=2))
    sampler = algo.async_learning.sampler
    assert sampler.request_after_update
    runners = set()
    for _ in range(6):
        collected = set()
        for batch in sampler.collect(timeout_s=60):
            collected |= set((batch[MODULE][c.EPS_ID] >> 40).tolist())
        assert not collected & set(sampler._in_flight)
        assert sampler.weights_updated(algo.learner.module.get_state)  # broadcast_interval 1
        assert set(sampler._in_flight) == {1, 2}
        runners |= collected
    assert runners == {1, 2}


def runner_weights(algo) -> list[dict[str, torch.Tensor]]:
    """Each runner's weights of the default module; the call queues behind the runner's
    sample in flight and any broadcast before it."""
    every_module = algo.env_runner_group.foreach_env_runner(lambda runner: runner.get_weights())
    return [weights[MODULE] for weights in every_module]


def test_weights_are_broadcast_every_broadcast_interval_updates(local_ray, build):
    # Learning in the driver's thread: each train() is one update, broadcast or not.
    algo = build(tiny_config(num_env_runners=1, broadcast_interval=2, learner_queue_size=0))
    initial = algo.get_module().get_state()

    algo.train()
    (weights,) = runner_weights(algo)
    assert all(torch.equal(weights[k], initial[k]) for k in initial)

    algo.train()
    (weights,) = runner_weights(algo)
    current = algo.get_module().get_state()
    assert all(torch.equal(weights[k], current[k]) for k in current)


def test_a_killed_runner_is_restarted_and_training_goes_on(local_ray, build):
    algo = build(tiny_config(num_env_runners=1))
    algo.train()
    ray.kill(algo.env_runner_group.remote_workers()[0], no_restart=True)

    results = [algo.train() for _ in range(2)]

    assert algo.env_runner_group.num_restarts == 1
    assert results[-1][m.NUM_ENV_STEPS_SAMPLED_LIFETIME] >= 3 * TRAIN_BATCH
    assert_counts(counters_after_drain(algo), 3)


# ------------------------------------------------------------------- learner thread
def test_learner_thread_results_lag_one_batch_and_report_every_update_once(local_ray, build):
    algo = build(tiny_config(num_env_runners=1, learner_queue_size=1))

    results = [algo.train() for _ in range(4)]

    # The first batch is still training (or queued) when the first step returns.
    assert results[0][m.LEARNER_RESULTS] == {}
    assert results[0][m.NUM_ENV_STEPS_TRAINED_LIFETIME] == 0
    for result in results[1:]:
        stats = result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]
        assert np.isfinite(stats[m.POLICY_LOSS]) and np.isfinite(stats[m.VF_LOSS])
        assert result[m.TIMERS][m.LEARNER_WAIT_TIMER] >= 0
        assert result[m.TIMERS][m.LEARN_TIMER] > 0
    # Each step hands over the batch it sampled; step k reports the update on batch k - 1.
    batch_rows = [r[m.ENV_RUNNER_RESULTS][m.NUM_ENV_STEPS_SAMPLED] for r in results]
    for k in range(1, 4):
        assert results[k][m.NUM_ENV_STEPS_TRAINED_LIFETIME] == sum(batch_rows[:k])
    counters = counters_after_drain(algo)
    assert counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == sum(batch_rows)
    # The drained update is reported by the next step (whose own batch is still training).
    after_drain = algo.train()
    assert m.POLICY_LOSS in after_drain[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]
    assert after_drain[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == sum(batch_rows)


def test_learner_thread_error_reaches_the_driver_with_its_cause(local_ray, build):
    class FailingLearner(APPOLearner):
        def update(self, batch, timestep=0):
            raise ValueError("loss went to NaN on purpose")

    algo = build(tiny_config(num_env_runners=1, learner_class=FailingLearner))
    algo.train()  # hands the batch over; the thread fails on it meanwhile

    with pytest.raises(LearnerThreadError, match="ValueError: loss went to NaN") as error:
        algo.train()
    assert isinstance(error.value.__cause__, ValueError)


def test_checkpoint_with_a_batch_in_the_learner_thread_saves_it_trained(
    local_ray, build, tmp_path: Path
):
    algo = build(tiny_config(num_env_runners=1))
    for _ in range(3):
        algo.train()
    path = algo.save_to_path(tmp_path / "ckpt")
    saved = algo.learner.module[MODULE].get_state()

    restored = build(tiny_config(num_env_runners=1))
    restored.restore_from_path(path)

    counters = dict(restored.counters)
    assert counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    module_state = restored.get_module().get_state()
    assert all(torch.equal(module_state[k], saved[k]) for k in saved)
    restored.train()
    assert_counts(counters_after_drain(restored), 4)


def test_reset_config_stops_the_old_learner_thread_and_trains_with_the_new_learner(
    local_ray, build
):
    algo = build(tiny_config(num_env_runners=1))
    algo.train()
    old_group, old_learner = algo.async_learning.learner_group, algo.learner

    assert algo.reset_config(tiny_config(num_env_runners=1, lr=5e-4).to_dict())
    results = [algo.train() for _ in range(2)]

    assert learner_threads_alive() == 1  # the old one stopped, the new one runs
    assert algo.async_learning.learner_group is not old_group and algo.learner is not old_learner
    assert algo.async_learning.learner_group.learner is algo.learner
    assert results[-1][m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID][m.CURR_LR] == 5e-4
    assert_counts(counters_after_drain(algo), 2)

    algo.stop()
    assert learner_threads_alive() == 0


def test_learner_thread_trains_in_order_and_submit_waits_for_room():
    started, release, seen = threading.Event(), threading.Event(), []

    def update(batch: SampleBatch, timestep: int) -> dict:
        started.set()
        release.wait()
        seen.append(timestep)
        return {MODULE: {"timestep": float(timestep)}}

    thread = LearnerThread(update, dict, queue_size=1)
    batch = SampleBatch({c.REWARDS: np.zeros(3, np.float32)})
    thread.submit(batch, 1)
    assert started.wait(timeout=30)  # the thread holds batch 1
    thread.submit(batch, 2)  # fills the queue
    third = threading.Thread(target=thread.submit, args=(batch, 3))
    third.start()
    third.join(timeout=0.2)
    assert third.is_alive()  # no room until batch 1 is done

    release.set()
    third.join(timeout=30)
    updates = thread.take(max_unfinished=0)

    assert seen == [1, 2, 3]
    assert [u.results[MODULE]["timestep"] for u in updates] == [1.0, 2.0, 3.0]
    assert all(u.num_env_steps == 3 for u in updates)
    thread.stop()
    assert not thread.is_alive()
    with pytest.raises(LearnerThreadError, match="stopped"):
        thread.submit(batch, 4)


# -------------------------------------------------------------------- learner group
def test_learner_group_without_a_thread_trains_each_batch_when_it_is_given(build):
    algo = build(tiny_config(IMPALAConfig))
    group = LearnerGroup(algo.learner)
    batch = algo.sample_from_runners(TRAIN_BATCH)

    (update,) = group.update(batch, timestep=0, async_update=True)  # no thread: now

    assert update.num_env_steps == len(batch) and update.learn_s > 0
    module_state = algo.learner.module.get_state()
    weights = update.get_weights()
    assert all(torch.equal(weights[MODULE][k], v) for k, v in module_state[MODULE].items())
    assert group.drain() == [] and group.pop_wait_s() == 0.0
    results = group.pop_results()
    assert results[MODULE] == update.results[MODULE]
    assert group.pop_results() == {}  # each update is reported once


def test_learner_group_with_a_thread_returns_updates_as_they_finish(build):
    algo = build(tiny_config(IMPALAConfig))
    group = LearnerGroup(algo.learner, queue_size=1)
    try:
        first, second = (algo.sample_from_runners(TRAIN_BATCH) for _ in range(2))
        before = algo.learner.module.get_state()

        assert group.update(first, timestep=0, async_update=True) == []  # still training
        (update,) = group.update(second, timestep=0, async_update=True)  # the first one's
        assert update.num_env_steps == len(first)
        (last,) = group.drain()
        assert last.num_env_steps == len(second) and group.drain() == []

        # The first update's weights were copied when it finished, before the second.
        first_weights, now = update.get_weights()[MODULE], algo.learner.module.get_state()
        assert not all(torch.equal(first_weights[k], before[MODULE][k]) for k in first_weights)
        assert not all(torch.equal(first_weights[k], now[MODULE][k]) for k in first_weights)
        stats = group.pop_results()[MODULE]
        for key in (m.POLICY_LOSS, m.VF_LOSS):
            assert stats[key] == pytest.approx(
                np.mean([update.results[MODULE][key], last.results[MODULE][key]])
            )
        assert group.pop_wait_s() > 0
    finally:
        group.stop()
    assert learner_threads_alive() == 0
