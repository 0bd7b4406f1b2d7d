"""Two runs with one seed give identical results and weights (SB3's test_deterministic.py),
for every registered algorithm; with a remote runner where sampling is synchronous."""

from __future__ import annotations

import pytest

from tunerl.core import metrics as m

from .helpers import (
    ALGORITHM_NAMES,
    assert_same_weights,
    comparable,
    same_numbers,
    samples_asynchronously,
    tiny_config,
    trains_offline,
    weights,
)

ITERATIONS = 2


def seeded_run(build, config) -> tuple[list[dict], dict]:
    algo = build(config)
    results = [comparable(algo.train()) for _ in range(ITERATIONS)]
    return results, weights(algo)


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_same_seed_gives_identical_results_and_weights(name, num_env_runners, build):
    if num_env_runners and samples_asynchronously(name):
        pytest.skip(f"{name}'s remote runners sample with weights of a timing-dependent age")
    if num_env_runners and trains_offline(name):
        pytest.skip(f"{name} builds no training runners: the local case is the whole case")
    config = tiny_config(name, num_env_runners=num_env_runners, seed=42)

    first, first_weights = seeded_run(build, config)
    second, second_weights = seeded_run(build, config)

    progress = m.NUM_ENV_STEPS_TRAINED_LIFETIME if trains_offline(name) else m.NUM_EPISODES_LIFETIME
    assert first[-1][progress] > 0
    assert any(result[m.LEARNER_RESULTS] for result in first)
    for a, b in zip(first, second, strict=True):
        assert same_numbers(a, b)
    assert_same_weights(first_weights, second_weights)


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_different_seeds_give_different_weights(name, build):
    """The seed reaches the weights: without this, the test above could pass on a run that
    ignores the seed and uses a constant one."""
    _, first = seeded_run(build, tiny_config(name, seed=1))
    _, second = seeded_run(build, tiny_config(name, seed=2))
    assert any(not first[k].equal(second[k]) for k in first)
