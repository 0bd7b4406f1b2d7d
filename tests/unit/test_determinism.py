"""Seeded runs repeat exactly; different seeds differ (PPO specifics: the seeded runs of
every registered algorithm on CartPole are in tests/contract/test_deterministic.py)."""

from __future__ import annotations

import torch

from tunerl.core import columns as c


def run(build, config, iterations: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    algo = build(config)
    results = [algo.train() for _ in range(iterations)]
    return results, algo.get_module().get_state()


def comparable(result: dict) -> dict:
    """The parts of a result that depend on the seed only (not on the clock)."""
    return {
        "env_runners": result["env_runners"],
        "learners": result["learners"],
        "num_env_steps_sampled_lifetime": result["num_env_steps_sampled_lifetime"],
        "num_episodes_lifetime": result["num_episodes_lifetime"],
    }


def test_same_seed_gives_identical_results_with_box_actions(tiny_config, build):
    """CartPole's case runs for every algorithm in tests/contract; this is PPO's Gaussian
    policy on Box actions."""
    # Pendulum's episodes last 200 steps: 400 env steps over 2 sub-envs end one in each.
    config = tiny_config(env="Pendulum-v1", seed=42, num_epochs=2, train_batch_size_per_learner=400)

    first, first_weights = run(build, config, 2)
    second, second_weights = run(build, config, 2)

    for a, b in zip(first, second):
        assert a["env_runners"]["num_episodes"] > 0
        assert comparable(a) == comparable(b)
    for name in first_weights:
        assert torch.equal(first_weights[name], second_weights[name]), name


def test_same_seed_interleaved_gives_identical_results(tiny_config, build):
    """Two algorithms alive in one process do not disturb each other's random streams."""
    first = build(tiny_config(seed=7))
    second = build(tiny_config(seed=7))
    for _ in range(3):
        assert comparable(first.train()) == comparable(second.train())


def test_different_seeds_differ(tiny_config, build):
    first, first_weights = run(build, tiny_config(seed=1), 3)
    second, second_weights = run(build, tiny_config(seed=2), 3)

    assert [r["env_runners"]["episode_return_mean"] for r in first] != [
        r["env_runners"]["episode_return_mean"] for r in second
    ]
    assert [r["learners"][c.DEFAULT_MODULE_ID]["vf_loss"] for r in first] != [
        r["learners"][c.DEFAULT_MODULE_ID]["vf_loss"] for r in second
    ]
    assert not torch.equal(first_weights["pi_head.weight"], second_weights["pi_head.weight"])


def test_seeded_sampling_repeats_actions(tiny_config, build):
    first = build(tiny_config(seed=3)).env_runner_group.sample(num_timesteps=100)
    second = build(tiny_config(seed=3)).env_runner_group.sample(num_timesteps=100)
    assert first.env_steps == second.env_steps
    assert first.module_ids() == second.module_ids() == [c.DEFAULT_MODULE_ID]
    first, second = first[c.DEFAULT_MODULE_ID], second[c.DEFAULT_MODULE_ID]
    assert set(first) == set(second)
    for key in first:
        assert (first[key] == second[key]).all(), key


def test_same_seed_gives_identical_evaluations(tiny_config, build):
    def evaluations() -> list[dict]:
        algo = build(tiny_config(seed=11).evaluation(evaluation_interval=1, evaluation_duration=4))
        return [algo.train()["evaluation"]["env_runners"] for _ in range(3)]

    assert evaluations() == evaluations()
