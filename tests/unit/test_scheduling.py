"""Runner actors and the CPUs they ask for: the README's quick start pattern (a second
algorithm built while the first still holds its runners) runs on a 2-core machine with the
Ray tunerl starts itself, and a request Ray cannot place fails within
`env_runner_start_timeout_s` with what was asked, what is free and the fix, instead of
waiting forever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from tunerl.core.env_runner_group import EnvRunnerStartError

# The quick start's settings (one training and one evaluation runner), with a small batch.
QUICK_START = textwrap.dedent(
    """
    from tunerl.algorithms.ppo import PPOConfig

    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=1)
        .training(train_batch_size_per_learner=256, minibatch_size=64, num_epochs=1)
        .evaluation(evaluation_interval=1, evaluation_num_env_runners=1,
                    evaluation_duration_unit="episodes", evaluation_duration=2,
                    evaluation_config={"explore": False})
    )
    ppo = config.build_algo()
    ppo.train()
    ppo_with_evaluation = config.build_algo()  # the first still holds its two runners
    result = ppo_with_evaluation.train()
    print("evaluated", result["evaluation"]["env_runners"]["num_episodes"], "episodes")
    ppo.stop()
    ppo_with_evaluation.stop()
    """
)
# A deadline for the script (it hung forever before), not a timing assertion.
SCRIPT_DEADLINE_S = 300


def test_the_quick_start_builds_a_second_algorithm_on_two_cores(tmp_path: Path):
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        pytest.skip("needs two cores")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own
    env["HOME"] = str(tmp_path)  # the algorithms' logdirs land here, not in ~/ray_results
    # The script and the Ray it starts see a 2-core machine, whatever this one has.
    process = subprocess.Popen(
        [sys.executable, "-c", QUICK_START],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )
    try:
        stdout, stderr = process.communicate(timeout=SCRIPT_DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the script and the Ray processes it started
        stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr[-4000:]
    assert "evaluated 2 episodes" in stdout


@pytest.fixture(scope="module")
def two_cpu_ray() -> Iterator[None]:
    """A Ray the user started with 2 CPUs: tunerl uses it as it is."""
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_runners_that_cannot_be_placed_fail_with_what_was_asked_and_what_is_free(
    two_cpu_ray, tiny_config, build
):
    config = tiny_config().env_runners(num_env_runners=4, env_runner_start_timeout_s=3)
    with pytest.raises(EnvRunnerStartError) as caught:
        build(config)

    message = str(caught.value)
    assert "of 4 env runner actors did not start within env_runner_start_timeout_s=3" in message
    assert "4 runners (num_env_runners=4) of 1 CPU each" in message
    assert "0 of 2 CPUs free" in message
    assert "num_cpus_per_env_runner=0.5" in message
    assert "ray.init(num_cpus=...)" in message
    # The two that started were stopped with the failed build: two runners fit again.
    assert build(tiny_config().env_runners(num_env_runners=2)).train()["training_iteration"] == 1


def test_a_second_algorithm_on_a_full_ray_is_told_to_stop_the_first(
    two_cpu_ray, tiny_config, build
):
    config = (
        tiny_config()
        .env_runners(num_env_runners=1)
        .evaluation(evaluation_interval=1, evaluation_num_env_runners=1, evaluation_duration=1)
    )
    first = build(config)
    with pytest.raises(EnvRunnerStartError) as caught:
        build(config.copy().env_runners(env_runner_start_timeout_s=3))
    message = str(caught.value)
    assert "(num_env_runners=1) of 1 CPU each" in message
    assert "0 of 2 CPUs free" in message
    assert "stop another algorithm that holds them (algo.stop())" in message

    first.stop()
    assert "evaluation" in build(config).train()


def test_evaluation_runners_that_cannot_be_placed_stop_the_training_runners(
    two_cpu_ray, tiny_config, build
):
    # The training runner has the default time to start; the evaluation runners 3 s.
    config = (
        tiny_config()
        .env_runners(num_env_runners=1)
        .evaluation(
            evaluation_interval=1,
            evaluation_num_env_runners=2,
            evaluation_config={"env_runner_start_timeout_s": 3},
        )
    )
    with pytest.raises(EnvRunnerStartError, match=r"\(evaluation_num_env_runners=2\)"):
        build(config)
    # Neither the training runner nor the evaluation runner that started holds a CPU now.
    assert build(tiny_config().env_runners(num_env_runners=2)).train()["training_iteration"] == 1


def test_a_gpu_on_a_machine_without_one_fails_naming_the_gpus(two_cpu_ray, tiny_config, build):
    if ray.cluster_resources().get("GPU"):
        pytest.skip("this machine has a GPU")
    config = tiny_config().env_runners(
        num_env_runners=1, num_gpus_per_env_runner=1, env_runner_start_timeout_s=3
    )
    with pytest.raises(EnvRunnerStartError) as caught:
        build(config)
    message = str(caught.value)
    assert "of 1 CPU and 1 GPU each" in message
    assert "0 of 0 GPUs free" in message
