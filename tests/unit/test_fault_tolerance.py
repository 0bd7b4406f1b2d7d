"""Fault tolerance with real Ray actors and real envs: runners killed with `ray.kill`, envs
that raise or sleep on a chosen step, sub-envs recreated in place, and a Tune trial whose
process is killed and resumed from its checkpoint. "Counts right" means: the lifetime env
steps equal the rows of the batches trained on, each finished episode is counted once, and
every restart is counted."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import ray
import ray.cloudpickle
import torch
from ray import tune

import tunerl
from tunerl import PPO, Callbacks
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.env_runner_group import EnvRunnerFailure

# Runner actors unpickle the env class and the callbacks from the config; they cannot
# import this test module by name, so it travels by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

FLAKY_ENV = "tunerl-test-flaky-cartpole"
GROUP_LOGGER = "tunerl.core.env_runner_group"


class FlakyCartPole(gym.Wrapper):
    """CartPole whose sub-env `vector_index` of runner `worker_index` misbehaves on its
    `at_step`-th step (counted over its episodes): "raise" an error, "sleep" `sleep_s`, or
    "kill" its own process. It misbehaves once: the first to do so writes `marker`, and no
    env misbehaves once that file exists (so a restarted runner or trial runs cleanly)."""

    def __init__(self, context):
        super().__init__(gym.make("CartPole-v1"))
        settings = {"worker_index": 1, "vector_index": 0, "at_step": 30, **context}
        chosen = (context.worker_index, context.vector_index) == (
            settings["worker_index"],
            settings["vector_index"],
        )
        self.settings = settings if chosen and "mode" in settings else None
        self.steps = 0

    def step(self, action):
        self.steps += 1
        settings = self.settings
        if settings is not None and self.steps == settings["at_step"]:
            marker = Path(settings["marker"])
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                self._misbehave(settings)
        return self.env.step(action)

    def _misbehave(self, settings):
        if settings["mode"] == "raise":
            raise RuntimeError(f"tunerl-test env broke at step {self.steps}")
        if settings["mode"] == "sleep":
            time.sleep(settings["sleep_s"])
        elif settings["mode"] == "kill" and os.getpid() != settings["driver_pid"]:
            os.kill(os.getpid(), signal.SIGKILL)


tunerl.register_env(FLAKY_ENV, FlakyCartPole)

RANDOMLY_FAILING_ENV = "tunerl-test-randomly-failing-cartpole"


class RandomlyFailingCartPole(gym.Wrapper):
    """CartPole whose every step raises with probability `failure_rate`, drawn from a
    generator seeded by the runner's `reset(seed=...)` (a restarted runner draws a new seed
    from the algorithm's stream, so a seeded run fails at the same steps every time). Each
    failure leaves a file in `failures_dir`: the test counts them."""

    def __init__(self, context):
        super().__init__(gym.make("CartPole-v1"))
        self.failure_rate = context["failure_rate"]
        self.failures_dir = Path(context["failures_dir"])
        self.rng = np.random.default_rng(0)
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        if self.rng.random() < self.failure_rate:
            (self.failures_dir / uuid.uuid4().hex).touch()
            raise RuntimeError(f"tunerl-test flaky env failed at step {self.steps}")
        return self.env.step(action)


tunerl.register_env(RANDOMLY_FAILING_ENV, RandomlyFailingCartPole)


class BatchRecorder(Callbacks):
    """Records, in the algorithm's process, the rows and the finished episodes of every
    train batch."""

    def __init__(self):
        self.rows: list[int] = []
        self.episodes: list[int] = []
        self.runner_indexes: list[set[int]] = []

    def on_sample_end(self, *, algorithm, samples, **kwargs):
        self.rows.append(len(samples))  # env steps of the MultiAgentBatch
        batch = samples[c.DEFAULT_MODULE_ID]
        self.episodes.append(int((batch[c.TERMINATEDS] | batch[c.TRUNCATEDS]).sum()))
        self.runner_indexes.append({int(i) for i in np.unique(batch[c.EPS_ID] >> 40)})


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def flaky_config(tiny_config, tmp_path: Path, num_env_runners: int = 2, **env_config):
    """Tiny PPO on FlakyCartPole, recording its batches."""
    env_config = {"marker": str(tmp_path / "misbehaved"), **env_config}
    return (
        tiny_config(env=FLAKY_ENV)
        .environment(env_config=env_config)
        .env_runners(num_env_runners=num_env_runners)
        .callbacks(BatchRecorder)
    )


def assert_counts_right(algo, result) -> None:
    recorder = algo.callbacks
    assert result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] == sum(recorder.rows)
    assert result[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == sum(recorder.rows)
    assert result[m.NUM_EPISODES_LIFETIME] == sum(recorder.episodes)
    for rows in recorder.rows:
        assert rows >= algo.config.train_batch_size_per_learner


def wait_until_up(algo) -> None:
    """Runner actors start asynchronously; wait for them before a test that times them."""
    ray.get([actor.ping.remote() for actor in algo.env_runner_group.remote_workers()])


def test_a_killed_runner_is_replaced_with_the_current_weights(local_ray, tiny_config, build):
    algo = build(tiny_config().env_runners(num_env_runners=2).callbacks(BatchRecorder))
    first = algo.train()
    assert first[m.FAULT_TOLERANCE] == {
        m.NUM_HEALTHY_ENV_RUNNERS: 2,
        m.NUM_ENV_RUNNER_RESTARTS: 0,
    }
    killed = algo.env_runner_group.remote_runners()[1]
    ray.kill(killed, no_restart=True)

    results = [algo.train() for _ in range(2)]

    assert algo.env_runner_group.remote_runners()[1] != killed
    assert results[-1][m.FAULT_TOLERANCE] == {
        m.NUM_HEALTHY_ENV_RUNNERS: 2,
        m.NUM_ENV_RUNNER_RESTARTS: 1,
    }
    assert_counts_right(algo, results[-1])
    # Both runners, the new one too, sampled the last batch and hold the learner's weights.
    assert algo.callbacks.runner_indexes[-1] == {1, 2}
    learner_weights = algo.get_module().get_state()
    for weights in algo.env_runner_group.foreach_env_runner(lambda runner: runner.get_weights()):
        assert list(weights) == [c.DEFAULT_MODULE_ID]
        for name, value in learner_weights.items():
            assert torch.equal(weights[c.DEFAULT_MODULE_ID][name], value), name


def test_a_restore_with_a_dead_runner_restarts_it(local_ray, tiny_config, build, tmp_path):
    algo = build(tiny_config().env_runners(num_env_runners=1).callbacks(BatchRecorder))
    algo.train()
    path = algo.save_to_path(tmp_path / "checkpoint")
    ray.kill(algo.env_runner_group.remote_runners()[1], no_restart=True)

    algo.restore_from_path(path)  # resets the runners: the dead one is restarted
    result = algo.train()

    assert result[m.FAULT_TOLERANCE][m.NUM_ENV_RUNNER_RESTARTS] == 1
    assert result["training_iteration"] == 2
    assert result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] == sum(algo.callbacks.rows)


def test_an_env_that_raises_restarts_its_runner_and_its_error_is_logged(
    local_ray, tiny_config, build, tmp_path, caplog
):
    config = flaky_config(tiny_config, tmp_path, mode="raise", worker_index=2)
    algo = build(config)
    with caplog.at_level(logging.WARNING, logger=GROUP_LOGGER):
        results = [algo.train() for _ in range(2)]

    assert (tmp_path / "misbehaved").exists()
    assert results[-1][m.FAULT_TOLERANCE][m.NUM_ENV_RUNNER_RESTARTS] == 1
    assert results[-1][m.FAULT_TOLERANCE][m.NUM_HEALTHY_ENV_RUNNERS] == 2
    assert_counts_right(algo, results[-1])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "Env runner 2 failed" in errors[0].getMessage()
    assert "tunerl-test env broke at step 30" in errors[0].getMessage()


def test_a_runner_that_may_not_restart_stops_training_with_its_error(
    local_ray, tiny_config, build, tmp_path
):
    config = flaky_config(tiny_config, tmp_path, mode="raise").fault_tolerance(
        restart_failed_env_runners=False
    )
    algo = build(config)
    with pytest.raises(EnvRunnerFailure, match="tunerl-test env broke at step 30") as caught:
        algo.train()
    assert "restart_failed_env_runners=False" in str(caught.value)
    assert isinstance(caught.value.__cause__, ray.exceptions.RayTaskError)


@pytest.mark.parametrize(
    "fault_tolerance",
    [
        {"restart_failed_env_runners": False},
        {"restart_failed_env_runners": True, "max_num_env_runner_restarts": 0},
    ],
    ids=["no-restarts", "restarts-used-up"],
)
def test_ignore_env_runner_failures_goes_on_with_the_healthy_runners(
    local_ray, tiny_config, build, tmp_path, fault_tolerance
):
    config = flaky_config(tiny_config, tmp_path, mode="raise", worker_index=2).fault_tolerance(
        ignore_env_runner_failures=True, **fault_tolerance
    )
    algo = build(config)
    results = [algo.train() for _ in range(2)]

    assert results[-1][m.FAULT_TOLERANCE] == {
        m.NUM_HEALTHY_ENV_RUNNERS: 1,
        m.NUM_ENV_RUNNER_RESTARTS: 0,
    }
    assert list(algo.env_runner_group.remote_runners()) == [1]
    assert algo.callbacks.runner_indexes[-1] == {1}
    assert_counts_right(algo, results[-1])


@pytest.mark.parametrize("num_env_runners", [0, 1])
def test_a_sub_env_that_raises_is_recreated_in_place(
    local_ray, tiny_config, build, tmp_path, caplog, num_env_runners
):
    config = flaky_config(
        tiny_config,
        tmp_path,
        num_env_runners,
        mode="raise",
        worker_index=num_env_runners,
        vector_index=1,
    ).fault_tolerance(restart_failed_sub_environments=True)
    algo = build(config)
    with caplog.at_level(logging.ERROR):
        results = [algo.train() for _ in range(2)]

    assert (tmp_path / "misbehaved").exists()
    group = algo.env_runner_group
    assert group.foreach_env_runner(lambda runner: runner.num_sub_env_restarts) == [1]
    assert group.num_restarts == 0  # the runner itself carried on
    assert_counts_right(algo, results[-1])
    if num_env_runners == 0:  # a remote runner logs in its own process
        (logged,) = [r.getMessage() for r in caplog.records if "Sub-env" in r.getMessage()]
        assert "Sub-env 1 of env runner 0" in logged
        assert "tunerl-test env broke at step 30" in logged


def test_without_sub_env_restarts_a_local_env_error_reaches_the_user(tiny_config, build, tmp_path):
    algo = build(flaky_config(tiny_config, tmp_path, 0, mode="raise", worker_index=0))
    with pytest.raises(RuntimeError, match="tunerl-test env broke at step 30") as caught:
        algo.train()
    # The env's own exception, raised where it was raised (not wrapped, not swallowed).
    assert type(caught.value) is RuntimeError
    assert caught.traceback[-1].name == "_misbehave"


def test_a_sub_env_that_always_fails_is_recreated_only_within_the_budget(
    tiny_config, build, tmp_path
):
    # Every step raises: recreating without end would never fill the batch (it hung before).
    config = (
        randomly_failing_config(tiny_config, tmp_path / "failures", seed=0)
        .environment(env_config={"failure_rate": 1.0, "failures_dir": str(tmp_path / "failures")})
        .env_runners(num_env_runners=0)
        .fault_tolerance(restart_failed_sub_environments=True, max_num_env_runner_restarts=3)
    )
    algo = build(config)
    with pytest.raises(RuntimeError, match="tunerl-test flaky env failed at step 1") as caught:
        algo.train()
    assert caught.traceback[-1].name == "step"  # the env's own frame
    assert algo.env_runner_group.foreach_env_runner(lambda r: r.num_sub_env_restarts) == [3]
    assert len(list((tmp_path / "failures").iterdir())) == 4  # 3 recreations, then raised


def test_a_late_runner_is_skipped_with_a_warning_not_waited_for(
    local_ray, tiny_config, build, tmp_path, caplog
):
    # Runner 2's env sleeps for ten minutes on its 10th step; the iteration must not wait.
    config = flaky_config(
        tiny_config, tmp_path, mode="sleep", worker_index=2, at_step=10, sleep_s=600
    ).env_runners(sample_timeout_s=10)
    algo = build(config)
    wait_until_up(algo)
    with caplog.at_level(logging.WARNING, logger=GROUP_LOGGER):
        results = [algo.train() for _ in range(2)]

    late = [r for r in caplog.records if "sample_timeout_s=10" in r.getMessage()]
    assert len(late) == 1  # asked once; the busy runner gets no new request
    assert "Env runner 2 did not return its sample" in late[0].getMessage()
    # Runner 1 sampled both batches; none of runner 2's steps were counted.
    assert algo.callbacks.runner_indexes == [{1}, {1}]
    assert_counts_right(algo, results[-1])
    assert results[-1][m.FAULT_TOLERANCE][m.NUM_HEALTHY_ENV_RUNNERS] == 2


def randomly_failing_config(tiny_config, failures_dir: Path, seed: int):
    """One remote runner with one CartPole that fails on about 1 step in 150, 128 steps an
    iteration: more than half of the sample requests fail, and three in a row often do (the
    old sampler gave up after three rounds and trained on what it had, or on nothing)."""
    failures_dir.mkdir()
    env_config = {"failure_rate": 1 / 150, "failures_dir": str(failures_dir)}
    return (
        tiny_config(env=RANDOMLY_FAILING_ENV, seed=seed)
        .environment(env_config=env_config)
        .env_runners(num_env_runners=1, num_envs_per_env_runner=1)
        .training(train_batch_size_per_learner=128, minibatch_size=64)
        .callbacks(BatchRecorder)
    )


def test_sampling_retries_until_the_batch_is_full_while_restarts_are_left(
    local_ray, tiny_config, build, tmp_path
):
    failures = tmp_path / "failures"
    algo = build(randomly_failing_config(tiny_config, failures, seed=4))
    results = [algo.train() for _ in range(3)]

    num_failures = len(list(failures.iterdir()))
    restarts = [0] + [result[m.FAULT_TOLERANCE][m.NUM_ENV_RUNNER_RESTARTS] for result in results]
    # With this seed one iteration's sample failed three times or more in a row (and was
    # still filled): the case a fixed number of rounds gets wrong.
    assert max(b - a for a, b in zip(restarts, restarts[1:])) >= 3
    assert results[-1][m.FAULT_TOLERANCE] == {
        m.NUM_HEALTHY_ENV_RUNNERS: 1,
        m.NUM_ENV_RUNNER_RESTARTS: num_failures,  # one restart per env failure
    }
    assert_counts_right(algo, results[-1])  # every batch trained on was full


def test_when_the_restarts_are_spent_the_error_carries_the_envs_own_error_and_traceback(
    local_ray, tiny_config, build, tmp_path
):
    config = randomly_failing_config(tiny_config, tmp_path / "failures", seed=4)
    algo = build(config.fault_tolerance(max_num_env_runner_restarts=1))
    with pytest.raises(EnvRunnerFailure) as caught:
        for _ in range(50):  # the second failure ends it, within a few iterations
            algo.train()

    message = str(caught.value)
    assert "RuntimeError: tunerl-test flaky env failed at step" in message
    assert "Traceback (most recent call last):" in message
    assert "in step" in message  # the env's own frame, from the runner's process
    assert "used 1 of its max_num_env_runner_restarts=1 restarts" in message
    assert algo.env_runner_group.num_restarts == 1


# ------------------------------------------------------------- a Tune trial that dies
def test_a_killed_trial_resumes_from_its_last_checkpoint(local_ray, tiny_config, tmp_path):
    """The trial's process is killed (SIGKILL, from its env) during its 3rd iteration; Tune
    restarts it from the checkpoint of iteration 2, and only iteration 3's steps are lost."""
    # Each of the two sub-envs takes 128 steps per iteration: step 300 is in iteration 3.
    config = flaky_config(
        tiny_config, tmp_path, 0, mode="kill", worker_index=0, at_step=300, driver_pid=os.getpid()
    )
    tuner = tune.Tuner(
        PPO,
        param_space=config,
        run_config=tune.RunConfig(
            stop={"training_iteration": 4},
            storage_path=str(tmp_path / "tune"),
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    )
    (result,) = tuner.fit()

    assert (tmp_path / "misbehaved").exists()  # the trial really was killed
    assert result.error is None
    assert result.metrics["training_iteration"] == 4
    assert result.metrics["iterations_since_restore"] == 2  # restored at iteration 2
    history = result.metrics_dataframe
    assert history["training_iteration"].tolist() == [1, 2, 3, 4]
    sampled = history["env_runners/num_env_steps_sampled"].sum()
    assert result.metrics[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] == sampled
    assert result.metrics[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == sampled
    assert result.metrics[m.NUM_EPISODES_LIFETIME] == history["env_runners/num_episodes"].sum()
