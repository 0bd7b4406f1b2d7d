"""GAE against a slow reference written from the definition, trajectory ends, and add_gae
with a real module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunerl import DefaultRLModule, SampleBatch
from tunerl.core import columns as c
from tunerl.core.postprocessing import (
    add_gae,
    compute_gae,
    next_state_values,
    trajectory_ends,
)

# A piece of trajectory ends by termination, truncation, or because the sampled fragment
# stops there (the episode goes on in the next batch).
TERMINATED, TRUNCATED, FRAGMENT_END = "terminated", "truncated", "fragment_end"


def reference_gae(
    rewards, values, new_obs_values, terminateds, truncateds, eps_id, t, gamma, lambda_
):
    """GAE from its definition, one trajectory piece at a time, in O(n^2):
    A_k = sum_{m >= k in the piece} (gamma * lambda)^(m - k) * delta_m, with
    delta_m = r_m + gamma * V(new_obs_m) - V(obs_m) and V(new_obs_m) = 0 only on termination.
    """
    n = len(rewards)
    advantages = np.zeros(n)
    start = 0
    while start < n:
        end = start
        while (
            end + 1 < n
            and not terminateds[end]
            and not truncateds[end]
            and eps_id[end + 1] == eps_id[end]
            and t[end + 1] == t[end] + 1
        ):
            end += 1
        for k in range(start, end + 1):
            total = 0.0
            for m in range(k, end + 1):
                next_value = 0.0 if terminateds[m] else new_obs_values[m]
                delta = rewards[m] + gamma * next_value - values[m]
                total += (gamma * lambda_) ** (m - k) * delta
            advantages[k] = total
        start = end + 1
    return advantages, advantages + values


def make_pieces(rng: np.random.Generator, kinds: list[tuple[int, int, int, str]]) -> dict:
    """Rows of several trajectory pieces, each `(eps_id, first_t, length, kind)`. Inside a
    piece the next observation is the next row's observation, so V(new_obs_j) is
    V(obs_{j+1}); at its last row new_obs is a state the batch holds nowhere else."""
    rows: dict[str, list] = {
        key: []
        for key in (
            "rewards",
            "values",
            "new_obs_values",
            "terminateds",
            "truncateds",
            "eps_id",
            "t",
        )
    }
    for eps_id, first_t, length, kind in kinds:
        values = rng.normal(size=length + 1)  # V of obs_0 .. obs_L (obs_L is the last new_obs)
        rows["rewards"] += list(rng.normal(size=length))
        rows["values"] += list(values[:-1])
        rows["new_obs_values"] += list(values[1:])
        rows["terminateds"] += [False] * (length - 1) + [kind == TERMINATED]
        rows["truncateds"] += [False] * (length - 1) + [kind == TRUNCATED]
        rows["eps_id"] += [eps_id] * length
        rows["t"] += list(range(first_t, first_t + length))
    return {
        "rewards": np.asarray(rows["rewards"], np.float32),
        "values": np.asarray(rows["values"], np.float32),
        "new_obs_values": np.asarray(rows["new_obs_values"], np.float32),
        "terminateds": np.asarray(rows["terminateds"], bool),
        "truncateds": np.asarray(rows["truncateds"], bool),
        "eps_id": np.asarray(rows["eps_id"], np.int64),
        "t": np.asarray(rows["t"], np.int64),
    }


# Two sub-envs' fragments, env-major as a runner writes them: episodes that terminate, are
# truncated, carry on past the fragment, start mid-episode (a fragment that began in the
# previous batch), and a single-step episode.
PIECES = [
    (10, 7, 4, TERMINATED),  # began in an earlier fragment
    (11, 0, 6, TRUNCATED),
    (12, 0, 1, TERMINATED),
    (13, 0, 5, FRAGMENT_END),  # last rows of sub-env 0
    (20, 3, 3, TRUNCATED),  # sub-env 1
    (21, 0, 7, TERMINATED),
    (22, 0, 1, TRUNCATED),
    (23, 0, 4, FRAGMENT_END),
]


def as_batch(rows: dict) -> SampleBatch:
    return SampleBatch(
        {
            c.REWARDS: rows["rewards"],
            c.VF_PREDS: rows["values"],
            c.TERMINATEDS: rows["terminateds"],
            c.TRUNCATEDS: rows["truncateds"],
            c.EPS_ID: rows["eps_id"],
            c.T: rows["t"],
        }
    )


@pytest.mark.parametrize("gamma, lambda_", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0), (1.0, 0.7)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compute_gae_matches_reference(gamma, lambda_, seed):
    rows = make_pieces(np.random.default_rng(seed), PIECES)
    ends = trajectory_ends(as_batch(rows))

    advantages, targets = compute_gae(
        rows["rewards"],
        rows["values"],
        rows["new_obs_values"],
        rows["terminateds"],
        ends,
        gamma,
        lambda_,
    )

    expected_adv, expected_targets = reference_gae(**rows, gamma=gamma, lambda_=lambda_)
    np.testing.assert_allclose(advantages, expected_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, expected_targets, rtol=1e-5, atol=1e-5)
    assert advantages.dtype == np.float32 and targets.dtype == np.float32


def test_truncation_bootstraps_on_the_final_observation_and_termination_does_not():
    # One 3-step episode, reward 1 per step, a critic that says 0 everywhere except on the
    # final observation, where it says 10.
    rewards = np.ones(3, np.float32)
    values = np.zeros(3, np.float32)
    next_values = np.array([0.0, 0.0, 10.0], np.float32)
    ends = np.array([False, False, True])
    gamma, lambda_ = 0.9, 1.0

    truncated_adv, _ = compute_gae(
        rewards, values, next_values, [False, False, False], ends, gamma, lambda_
    )
    terminated_adv, _ = compute_gae(
        rewards, values, next_values, [False, False, True], ends, gamma, lambda_
    )

    # Truncated: the return goes on past the time limit, estimated by V(final obs) = 10.
    np.testing.assert_allclose(
        truncated_adv, [1 + 0.9 + 0.81 * 10, 1 + 0.9 * 10, 1 + 0.9 * 10], rtol=1e-6
    )
    # Terminated: nothing follows; the final observation's value is ignored.
    np.testing.assert_allclose(terminated_adv, [2.71, 1.9, 1.0], rtol=1e-6)


def test_fragment_end_bootstraps_like_truncation():
    rows = make_pieces(np.random.default_rng(3), [(1, 0, 5, FRAGMENT_END)])
    ends = trajectory_ends(as_batch(rows))
    assert ends.tolist() == [False, False, False, False, True]

    base, _ = compute_gae(
        rows["rewards"],
        rows["values"],
        rows["new_obs_values"],
        rows["terminateds"],
        ends,
        0.9,
        0.95,
    )
    bumped_values = rows["new_obs_values"].copy()
    bumped_values[-1] += 1.0
    bumped, _ = compute_gae(
        rows["rewards"], rows["values"], bumped_values, rows["terminateds"], ends, 0.9, 0.95
    )

    # Raising V(new_obs) of the last row by 1 raises A_k by gamma * (gamma * lambda)^(4 - k).
    expected_change = 0.9 * (0.9 * 0.95) ** np.arange(4, -1, -1)
    np.testing.assert_allclose(bumped - base, expected_change, rtol=1e-5)


def test_gamma_one_lambda_one_gives_monte_carlo_returns():
    rewards = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    values = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    next_values = np.array([-1.0, 2.0, 0.0, 123.0], np.float32)  # the last is ignored
    ends = np.array([False, False, False, True])
    _, targets = compute_gae(
        rewards, values, next_values, [False, False, False, True], ends, 1.0, 1.0
    )
    np.testing.assert_allclose(targets, [10.0, 9.0, 7.0, 4.0], rtol=1e-6)


def test_lambda_zero_gives_one_step_td_errors():
    rows = make_pieces(np.random.default_rng(4), PIECES)
    ends = trajectory_ends(as_batch(rows))
    advantages, _ = compute_gae(
        rows["rewards"], rows["values"], rows["new_obs_values"], rows["terminateds"], ends, 0.9, 0.0
    )
    bootstrap = np.where(rows["terminateds"], 0.0, rows["new_obs_values"])
    np.testing.assert_allclose(
        advantages, rows["rewards"] + 0.9 * bootstrap - rows["values"], rtol=1e-5, atol=1e-6
    )


def test_trajectory_ends_marks_terminations_truncations_new_episodes_and_time_jumps():
    batch = SampleBatch(
        {
            c.EPS_ID: [1, 1, 1, 2, 2, 3, 3, 3, 4],
            c.T: [0, 1, 2, 5, 6, 0, 1, 5, 0],
            c.TERMINATEDS: [False, False, True, False, False, False, False, False, False],
            c.TRUNCATEDS: [False, False, False, False, True, False, False, False, False],
        }
    )
    ends = trajectory_ends(batch)
    assert ends.tolist() == [
        False,
        False,
        True,  # terminated
        False,
        True,  # truncated
        False,
        True,  # t jumps from 1 to 5: the rows in between are not in the batch
        True,  # episode 4 follows
        True,  # last row of the batch: a fragment end
    ]
    assert ends.dtype == bool


def test_trajectory_ends_does_not_modify_the_batch():
    batch = SampleBatch(
        {
            c.EPS_ID: [1, 2],
            c.T: [0, 0],
            c.TERMINATEDS: [False, False],
            c.TRUNCATEDS: [False, False],
        }
    )
    trajectory_ends(batch)
    assert batch[c.TERMINATEDS].tolist() == [False, False]
    assert batch[c.TRUNCATEDS].tolist() == [False, False]


def test_next_state_values_uses_the_next_row_inside_a_piece_and_new_obs_at_ends():
    rows = make_pieces(np.random.default_rng(5), PIECES)
    ends = trajectory_ends(as_batch(rows))
    # Only the values at the ends are given; the rest must come from the next row.
    end_next_values = np.where(ends, rows["new_obs_values"], np.nan).astype(np.float32)

    next_values = next_state_values(rows["values"], ends, end_next_values)

    np.testing.assert_array_equal(next_values, rows["new_obs_values"])


def _module_batch(module: DefaultRLModule, rng: np.random.Generator) -> tuple[SampleBatch, dict]:
    """A batch with real observations whose vf_preds come from `module`, and the module's
    V(new_obs) for every row (what the reference needs)."""
    rows = make_pieces(rng, PIECES)
    n = len(rows["rewards"])
    obs = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    new_obs = np.empty_like(obs)
    new_obs[:-1] = obs[1:]
    ends = trajectory_ends(as_batch(rows))
    new_obs[ends] = rng.uniform(-1, 1, size=(int(ends.sum()), 3))
    with torch.no_grad():
        values = module.compute_values({c.OBS: torch.from_numpy(obs)}).numpy()
        new_obs_values = module.compute_values({c.OBS: torch.from_numpy(new_obs)}).numpy()
    batch = as_batch(rows)
    batch[c.VF_PREDS] = values
    batch[c.OBS] = obs
    batch[c.NEW_OBS] = new_obs
    reference_rows = {**rows, "values": values, "new_obs_values": new_obs_values}
    return batch, reference_rows


def test_add_gae_with_a_real_module_matches_reference(discrete_module: DefaultRLModule):
    batch, rows = _module_batch(discrete_module, np.random.default_rng(6))

    out = add_gae(batch, discrete_module, gamma=0.99, lambda_=0.95)

    expected_adv, expected_targets = reference_gae(**rows, gamma=0.99, lambda_=0.95)
    assert out is batch
    np.testing.assert_allclose(out[c.ADVANTAGES], expected_adv, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[c.VALUE_TARGETS], expected_targets, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        out[c.VALUE_TARGETS], out[c.ADVANTAGES] + out[c.VF_PREDS], rtol=1e-6, atol=1e-6
    )


def test_add_gae_reads_new_obs_only_where_it_bootstraps(discrete_module: DefaultRLModule):
    """The critic sees `new_obs` only at truncations and fragment ends: NaN anywhere else
    (terminated rows, rows inside a piece) must not reach the advantages."""
    batch, rows = _module_batch(discrete_module, np.random.default_rng(7))
    ends = trajectory_ends(batch)
    bootstrap = ends & ~batch[c.TERMINATEDS]
    assert bootstrap.any() and (ends & batch[c.TERMINATEDS]).any()
    poisoned = batch[c.NEW_OBS].copy()
    poisoned[~bootstrap] = np.nan
    batch[c.NEW_OBS] = poisoned

    add_gae(batch, discrete_module, gamma=0.99, lambda_=0.95)

    expected_adv, _ = reference_gae(**rows, gamma=0.99, lambda_=0.95)
    assert np.isfinite(batch[c.ADVANTAGES]).all()
    np.testing.assert_allclose(batch[c.ADVANTAGES], expected_adv, rtol=1e-4, atol=1e-5)
