"""save -> restore -> continue, for every registered algorithm (SB3's test_save_load.py):
a restore brings the weights back, and two restores of one checkpoint continue identically
(same next results, same weights)."""

from __future__ import annotations

import pytest

from tunerl import ALGORITHMS

from .helpers import (
    ALGORITHM_NAMES,
    assert_same_weights,
    comparable,
    same_numbers,
    tiny_config,
    weights,
)


def continuation(algo, iterations: int = 2) -> tuple[list[dict], dict]:
    return [comparable(algo.train()) for _ in range(iterations)], weights(algo)


@pytest.fixture
def checkpoint(request, build, tmp_path):
    """(name, path, weights) of a tiny algorithm saved after one iteration."""
    name = request.param
    algo = build(tiny_config(name, seed=3))
    algo.train()
    return name, algo.save_to_path(tmp_path / "checkpoint"), weights(algo)


@pytest.mark.parametrize("checkpoint", ALGORITHM_NAMES, indirect=True)
def test_two_restores_of_one_checkpoint_continue_identically(checkpoint, build):
    name, path, saved_weights = checkpoint
    runs = []
    for _ in range(2):
        restored = ALGORITHMS[name].from_checkpoint(path)
        try:
            assert type(restored) is ALGORITHMS[name]
            assert restored.iteration == 1
            assert_same_weights(weights(restored), saved_weights)
            runs.append(continuation(restored))
        finally:
            restored.stop()
    (first, first_weights), (second, second_weights) = runs
    assert [r["training_iteration"] for r in first] == [2, 3]
    for a, b in zip(first, second, strict=True):
        assert same_numbers(a, b)
    assert_same_weights(first_weights, second_weights)


@pytest.mark.parametrize("checkpoint", ALGORITHM_NAMES, indirect=True)
def test_a_restore_into_a_live_algorithm_continues_as_a_fresh_one(checkpoint, build):
    """What PBT and a Tune trial restore do: an algorithm built with another seed, which has
    trained, takes the checkpoint and continues exactly as `from_checkpoint` does."""
    name, path, _ = checkpoint
    reference = ALGORITHMS[name].from_checkpoint(path)
    try:
        expected, expected_weights = continuation(reference)
    finally:
        reference.stop()
    live = build(tiny_config(name, seed=4))
    live.train()
    live.restore_from_path(path)
    assert live.iteration == 1
    results, live_weights = continuation(live)
    for a, b in zip(results, expected, strict=True):
        assert same_numbers(a, b)
    assert_same_weights(live_weights, expected_weights)
