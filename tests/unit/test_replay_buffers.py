"""Replay buffers: the sum-tree against exact cumulative sums, prioritized sampling against
p_i^alpha / sum_j p_j^alpha and its importance weights by hand, uniform storage, n-step
transitions against a per-row reference loop (also when they span sample calls), and
save/load round trips."""

from __future__ import annotations

import signal
from contextlib import contextmanager

import numpy as np
import pytest

from tunerl import SampleBatch
from tunerl.core import columns as c
from tunerl.core.replay_buffers import (
    BATCH_INDEXES,
    N_STEP_DISCOUNT,
    WEIGHTS,
    NStepCollector,
    PrioritizedReplayBuffer,
    ReplayBuffer,
    SumTree,
    n_step_transitions,
)
from tunerl.core.sample_batch import concat_samples


def transitions(first: int, count: int) -> SampleBatch:
    """`count` rows whose every column says which row it is (row ids first .. first+count-1),
    so a stored or sampled row can be traced back to what was added."""
    ids = np.arange(first, first + count)
    return SampleBatch(
        {
            c.OBS: np.stack([ids, -ids], axis=1).astype(np.float32),
            c.ACTIONS: ids.astype(np.int64),
            c.REWARDS: ids.astype(np.float32),
            c.NEW_OBS: np.stack([ids + 1, -ids - 1], axis=1).astype(np.float32),
            c.TERMINATEDS: ids % 3 == 0,
        }
    )


@contextmanager
def fails_if_stuck(seconds: float):
    """Turns an endless loop into an error instead of a hung test run (POSIX main thread).
    A guard against hangs, not a timing assertion: the guarded work takes microseconds."""

    def _raise(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: an endless loop")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------- SumTree
def assert_tree_consistent(tree: SumTree, priorities: np.ndarray) -> None:
    """Leaves hold the priorities (zeros past capacity), every inner node the sum of its two
    children, the root the total."""
    leaves = tree.nodes[tree.size : tree.size + len(priorities)]
    np.testing.assert_array_equal(leaves, priorities)
    assert not tree.nodes[tree.size + len(priorities) :].any()
    inner = np.arange(1, tree.size)
    np.testing.assert_allclose(
        tree.nodes[inner], tree.nodes[2 * inner] + tree.nodes[2 * inner + 1], rtol=1e-12
    )
    assert tree.total() == pytest.approx(priorities.sum(), rel=1e-12)


@pytest.mark.parametrize("capacity", [1 << 4, 37, 100])
def test_sum_tree_total_and_find_match_exact_cumulative_sums(capacity):
    rng = np.random.default_rng(capacity)
    priorities = rng.uniform(0.0, 5.0, size=capacity)
    tree = SumTree(capacity)
    tree.set(np.arange(capacity), priorities)

    assert_tree_consistent(tree, priorities)
    cumsum = np.cumsum(priorities)
    queries = rng.uniform(0.0, cumsum[-1], size=20_000)
    # find(v) is the slot i with sum(p[:i]) <= v < sum(p[:i+1]).
    np.testing.assert_array_equal(tree.find(queries), np.searchsorted(cumsum, queries, "right"))
    np.testing.assert_array_equal(tree.get(np.arange(capacity)), priorities)


def test_sum_tree_find_on_boundaries_and_skips_zero_priorities():
    # Integer priorities: every partial sum is exact, so boundaries can be hit exactly.
    priorities = np.array([3.0, 0.0, 1.0, 0.0, 0.0, 2.0, 4.0, 0.0, 1.0, 5.0, 0.0])
    tree = SumTree(len(priorities))
    tree.set(np.arange(len(priorities)), priorities)
    cumsum = np.cumsum(priorities)
    queries = np.concatenate([[0.0], cumsum, cumsum - 0.5, np.arange(0, 16) + 0.25])
    queries = queries[(queries >= 0) & (queries < tree.total())]  # the range find is for

    found = tree.find(queries)

    np.testing.assert_array_equal(found, np.searchsorted(cumsum, queries, "right"))
    assert (priorities[found] > 0).all()  # a zero-priority slot is never found


def test_sum_tree_updates_keep_sums_right():
    rng = np.random.default_rng(1)
    capacity = 50
    priorities = np.zeros(capacity)
    tree = SumTree(capacity)
    for _ in range(30):
        slots = rng.choice(capacity, size=rng.integers(1, 12), replace=False)
        priorities[slots] = rng.uniform(0.0, 10.0, size=len(slots))
        tree.set(slots, priorities[slots])
        assert_tree_consistent(tree, priorities)
    cumsum = np.cumsum(priorities)
    queries = rng.uniform(0.0, cumsum[-1], size=5000)
    np.testing.assert_array_equal(tree.find(queries), np.searchsorted(cumsum, queries, "right"))


def test_sum_tree_update_with_repeated_slots_stays_consistent():
    # Sampling with replacement repeats slots; update_priorities then sets them twice at once.
    tree = SumTree(10)
    tree.set(np.arange(10), np.ones(10))
    tree.set(np.array([3, 7, 3, 3, 0]), np.array([5.0, 2.0, 6.0, 7.0, 0.5]))
    leaves = tree.get(np.arange(10))
    assert leaves[3] in (5.0, 6.0, 7.0) and leaves[7] == 2.0 and leaves[0] == 0.5
    assert_tree_consistent(tree, leaves)


def test_sum_tree_and_prioritized_buffer_of_capacity_one():
    with fails_if_stuck(1.0):
        tree = SumTree(1)
        tree.set(np.array([0]), np.array([2.5]))
        assert tree.total() == 2.5
        buffer = PrioritizedReplayBuffer(1, seed=0)
        buffer.add(transitions(0, 3))
    assert len(buffer) == 1
    assert buffer.sample(4)[c.ACTIONS].tolist() == [2, 2, 2, 2]


# -------------------------------------------------------------- prioritized replay
def sampling_frequencies(buffer: PrioritizedReplayBuffer, num_batches: int, batch_size: int):
    counts = np.zeros(buffer.capacity)
    for _ in range(num_batches):
        np.add.at(counts, buffer.sample(batch_size)[BATCH_INDEXES], 1)
    return counts / counts.sum()


def expected_probabilities(td_errors, alpha, epsilon):
    priorities = (np.abs(td_errors) + epsilon) ** alpha
    return priorities / priorities.sum()


def test_prioritized_sampling_frequencies_follow_priorities_to_the_alpha():
    alpha, epsilon = 0.6, 1e-6
    buffer = PrioritizedReplayBuffer(5, alpha=alpha, beta=0.4, epsilon=epsilon, seed=0)
    buffer.add(transitions(0, 5))
    td_errors = np.array([0.5, -2.0, 0.1, 1.0, 3.0])
    buffer.update_priorities(np.arange(5), td_errors)

    frequencies = sampling_frequencies(buffer, num_batches=2000, batch_size=50)

    expected = expected_probabilities(td_errors, alpha, epsilon)
    np.testing.assert_allclose(frequencies, expected, atol=0.005)
    # Not merely "larger priority, more samples": alpha flattens the distribution.
    assert np.abs(frequencies - np.abs(td_errors) / np.abs(td_errors).sum()).max() > 0.05


def test_update_priorities_changes_the_sampling_distribution():
    buffer = PrioritizedReplayBuffer(6, alpha=1.0, seed=1)
    buffer.add(transitions(0, 6))
    buffer.update_priorities(np.arange(6), np.ones(6))
    before = sampling_frequencies(buffer, num_batches=300, batch_size=60)
    np.testing.assert_allclose(before, np.full(6, 1 / 6), atol=0.01)

    td_errors = np.array([9.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    buffer.update_priorities(np.arange(6), td_errors)
    after = sampling_frequencies(buffer, num_batches=300, batch_size=60)

    np.testing.assert_allclose(after, expected_probabilities(td_errors, 1.0, 1e-6), atol=0.01)
    assert after[0] > 0.6


def test_partly_filled_prioritized_buffer_samples_only_stored_slots():
    buffer = PrioritizedReplayBuffer(16, seed=2)
    buffer.add(transitions(0, 3))
    buffer.update_priorities(np.arange(3), np.array([1.0, 4.0, 2.0]))
    frequencies = sampling_frequencies(buffer, num_batches=200, batch_size=32)
    assert not frequencies[3:].any()
    np.testing.assert_allclose(
        frequencies[:3], expected_probabilities(np.array([1.0, 4.0, 2.0]), 0.6, 1e-6), atol=0.01
    )


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
def test_importance_weights_match_the_formula_by_hand(beta):
    alpha, epsilon = 0.7, 1e-6
    buffer = PrioritizedReplayBuffer(8, alpha=alpha, beta=0.5, epsilon=epsilon, seed=3)
    buffer.add(transitions(0, 7))
    # Slot 2 is so rare that the batch misses it: the weights are still normalized by the
    # largest weight over the whole buffer, not over the batch.
    td_errors = np.array([0.2, 1.5, 1e-3, 3.0, 0.7, 1.1, 0.4])
    buffer.update_priorities(np.arange(7), td_errors)

    batch = buffer.sample(64, beta=beta)
    assert 2 not in batch[BATCH_INDEXES]

    n = 7
    probabilities = expected_probabilities(td_errors, alpha, epsilon)
    all_weights = (n * probabilities) ** -beta
    expected = all_weights[batch[BATCH_INDEXES]] / all_weights.max()
    np.testing.assert_allclose(batch[WEIGHTS], expected, rtol=1e-5)
    assert batch[WEIGHTS].dtype == np.float32
    if beta > 0:
        assert batch[WEIGHTS].max() < 0.9


def test_sample_uses_the_buffer_beta_unless_told_otherwise():
    buffer = PrioritizedReplayBuffer(4, alpha=1.0, beta=1.0, seed=4)
    buffer.add(transitions(0, 4))
    buffer.update_priorities(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    batch = buffer.sample(200)
    slots = batch[BATCH_INDEXES]
    # beta = 1: w_i = P_min / P_i = p_min / p_i.
    np.testing.assert_allclose(batch[WEIGHTS], 1.0 / (slots + 1.0), rtol=1e-5)
    assert np.all(buffer.sample(50, beta=0.0)[WEIGHTS] == 1.0)


def test_new_transitions_get_the_largest_priority_seen_so_far():
    alpha = 0.5
    buffer = PrioritizedReplayBuffer(10, alpha=alpha, epsilon=0.0, seed=5)
    buffer.add(transitions(0, 3))
    np.testing.assert_allclose(buffer.tree.get(np.arange(3)), 1.0)  # max priority starts at 1
    buffer.update_priorities(np.arange(3), np.array([4.0, 0.25, 0.5]))
    buffer.update_priorities(np.array([0]), np.array([0.1]))  # the maximum ever seen stays 4

    slots = buffer.add(transitions(3, 2))

    assert slots.tolist() == [3, 4]
    np.testing.assert_allclose(buffer.tree.get(slots), 4.0**alpha)
    np.testing.assert_allclose(buffer.tree.get(np.arange(3)), np.array([0.1, 0.25, 0.5]) ** alpha)
    assert buffer.tree.total() == pytest.approx(sum(np.array([0.1, 0.25, 0.5, 4.0, 4.0]) ** alpha))


def test_prioritized_wrap_around_overwrites_the_oldest_with_max_priority():
    buffer = PrioritizedReplayBuffer(5, alpha=1.0, epsilon=0.0, seed=6)
    buffer.add(transitions(0, 5))
    buffer.update_priorities(np.arange(5), np.array([0.1, 0.2, 3.0, 0.4, 0.5]))

    slots = buffer.add(transitions(5, 2))

    assert slots.tolist() == [0, 1] and len(buffer) == 5 and buffer.next_index == 2
    assert buffer.storage[c.ACTIONS].tolist() == [5, 6, 2, 3, 4]
    np.testing.assert_allclose(buffer.tree.get(np.arange(5)), [3.0, 3.0, 3.0, 0.4, 0.5])
    assert buffer.tree.total() == pytest.approx(9.9)


def test_prioritized_buffer_rejects_bad_alpha_and_beta():
    with pytest.raises(ValueError, match="alpha"):
        PrioritizedReplayBuffer(4, alpha=-0.1)
    with pytest.raises(ValueError, match="beta"):
        PrioritizedReplayBuffer(4, beta=1.5)


# ------------------------------------------------------------------- uniform replay
def test_uniform_buffer_add_len_and_wrap_around():
    buffer = ReplayBuffer(5, seed=0)
    assert len(buffer) == 0
    assert buffer.add(transitions(0, 3)).tolist() == [0, 1, 2]
    assert len(buffer) == 3 and buffer.next_index == 3

    assert buffer.add(transitions(3, 4)).tolist() == [3, 4, 0, 1]

    assert len(buffer) == 5 and buffer.next_index == 2
    # The two oldest rows (0 and 1) were overwritten by rows 5 and 6.
    assert buffer.storage[c.ACTIONS].tolist() == [5, 6, 2, 3, 4]
    np.testing.assert_array_equal(buffer.storage[c.OBS][:, 0], [5, 6, 2, 3, 4])
    assert buffer.storage[c.TERMINATEDS].tolist() == [False, True, False, True, False]
    # A batch larger than the capacity keeps only its newest rows.
    buffer.add(transitions(10, 12))
    assert sorted(buffer.storage[c.ACTIONS].tolist()) == [17, 18, 19, 20, 21]
    assert len(buffer) == 5


def test_uniform_sample_shapes_and_batch_indexes():
    buffer = ReplayBuffer(100, seed=1)
    buffer.add(transitions(0, 30))

    batch = buffer.sample(64)

    assert len(batch) == 64
    assert batch[c.OBS].shape == (64, 2) and batch[c.OBS].dtype == np.float32
    assert batch[c.NEW_OBS].shape == (64, 2)
    assert batch[c.ACTIONS].shape == (64,) and batch[c.ACTIONS].dtype == np.int64
    assert batch[c.TERMINATEDS].dtype == bool
    slots = batch[BATCH_INDEXES]
    assert slots.shape == (64,) and ((slots >= 0) & (slots < 30)).all()
    # Every column of a sampled row is the row stored at its index.
    for key, column in buffer.storage.items():
        np.testing.assert_array_equal(batch[key], column[slots])
    assert WEIGHTS not in batch


def test_uniform_sampling_covers_the_stored_rows_evenly():
    buffer = ReplayBuffer(16, seed=2)
    buffer.add(transitions(0, 10))
    counts = np.bincount(
        np.concatenate([buffer.sample(100)[BATCH_INDEXES] for _ in range(200)]), minlength=16
    )
    assert not counts[10:].any()
    np.testing.assert_allclose(counts[:10] / counts.sum(), 0.1, atol=0.01)


def test_uniform_buffer_errors():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4).sample(2)
    buffer = ReplayBuffer(4)
    buffer.add(transitions(0, 2))
    other_columns = SampleBatch({c.OBS: np.zeros((1, 2), np.float32)})
    with pytest.raises(ValueError, match="columns"):
        buffer.add(other_columns)


# ---------------------------------------------------------------- n-step transitions
TERMINATED, TRUNCATED, FRAGMENT_END = "terminated", "truncated", "fragment_end"

# Two sub-envs' fragments, env-major: episodes that terminate, are truncated, carry on past
# the fragment, begin mid-episode, and single steps of each kind.
PIECES = [
    (10, 7, 4, TERMINATED),  # began in an earlier fragment
    (11, 0, 6, TRUNCATED),
    (12, 0, 1, TERMINATED),
    (13, 0, 2, TRUNCATED),
    (14, 0, 5, FRAGMENT_END),  # last rows of sub-env 0; the episode goes on
    (20, 3, 3, TRUNCATED),  # sub-env 1
    (21, 0, 7, TERMINATED),
    (22, 0, 1, TRUNCATED),
    (23, 0, 4, FRAGMENT_END),
]


def one_step_batch(rng: np.random.Generator) -> SampleBatch:
    columns: dict[str, list] = {key: [] for key in ("eps_id", "t", "term", "trunc")}
    for eps_id, first_t, length, kind in PIECES:
        columns["eps_id"] += [eps_id] * length
        columns["t"] += list(range(first_t, first_t + length))
        columns["term"] += [False] * (length - 1) + [kind == TERMINATED]
        columns["trunc"] += [False] * (length - 1) + [kind == TRUNCATED]
    rows = len(columns["t"])
    return SampleBatch(
        {
            c.OBS: rng.normal(size=(rows, 3)).astype(np.float32),
            c.ACTIONS: rng.integers(0, 4, size=rows),
            c.REWARDS: rng.normal(size=rows).astype(np.float32),
            # Distinct per row, so the row whose new_obs was taken can be identified.
            c.NEW_OBS: rng.normal(size=(rows, 3)).astype(np.float32),
            c.TERMINATEDS: np.asarray(columns["term"]),
            c.TRUNCATEDS: np.asarray(columns["trunc"]),
            c.EPS_ID: np.asarray(columns["eps_id"], np.int64),
            c.T: np.asarray(columns["t"], np.int64),
        }
    )


def reference_n_step(batch: SampleBatch, n: int, gamma: float) -> dict[str, np.ndarray]:
    """From the definition, one row at a time: sum up to n rewards of the same episode
    piece, stopping after a terminated or truncated step, before another episode, and at
    the end of the batch."""
    rows = len(batch)
    out: dict[str, list] = {"rewards": [], "new_obs": [], "terminateds": [], "discount": []}
    for start in range(rows):
        total, steps, row = 0.0, 0, start
        while True:
            total += gamma**steps * float(batch[c.REWARDS][row])
            steps += 1
            piece_ends = (
                batch[c.TERMINATEDS][row]
                or batch[c.TRUNCATEDS][row]
                or row + 1 == rows
                or batch[c.EPS_ID][row + 1] != batch[c.EPS_ID][row]
                or batch[c.T][row + 1] != batch[c.T][row] + 1
            )
            if piece_ends or steps == n:
                break
            row += 1
        out["rewards"].append(total)
        out["new_obs"].append(batch[c.NEW_OBS][row])
        out["terminateds"].append(bool(batch[c.TERMINATEDS][row]))
        out["discount"].append(gamma**steps)
    return {key: np.asarray(value) for key, value in out.items()}


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("gamma", [0.99, 0.5])
def test_n_step_transitions_match_a_per_row_reference(n, gamma):
    batch = one_step_batch(np.random.default_rng(n))

    out = n_step_transitions(batch, n, gamma)

    expected = reference_n_step(batch, n, gamma)
    assert len(out) == len(batch)
    np.testing.assert_allclose(out[c.REWARDS], expected["rewards"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[c.NEW_OBS], expected["new_obs"])
    np.testing.assert_array_equal(out[c.TERMINATEDS], expected["terminateds"])
    np.testing.assert_allclose(out[N_STEP_DISCOUNT], expected["discount"], rtol=1e-6)
    np.testing.assert_array_equal(out[c.OBS], batch[c.OBS])
    np.testing.assert_array_equal(out[c.ACTIONS], batch[c.ACTIONS])
    assert out[c.REWARDS].dtype == np.float32 and out[N_STEP_DISCOUNT].dtype == np.float32


def test_n_step_one_is_the_one_step_batch():
    batch = one_step_batch(np.random.default_rng(0))
    out = n_step_transitions(batch, 1, 0.9)
    np.testing.assert_array_equal(out[c.REWARDS], batch[c.REWARDS])
    np.testing.assert_array_equal(out[c.NEW_OBS], batch[c.NEW_OBS])
    np.testing.assert_array_equal(out[c.TERMINATEDS], batch[c.TERMINATEDS])
    np.testing.assert_allclose(out[N_STEP_DISCOUNT], 0.9)


def test_n_step_truncation_stops_the_sum_but_keeps_bootstrapping():
    # One episode truncated after 4 steps, then a new one that terminates after 2.
    batch = SampleBatch(
        {
            c.OBS: np.arange(6, dtype=np.float32)[:, None],
            c.ACTIONS: np.zeros(6, np.int64),
            c.REWARDS: np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0], np.float32),
            c.NEW_OBS: np.arange(1, 7, dtype=np.float32)[:, None] * 100,
            c.TERMINATEDS: np.array([False, False, False, False, False, True]),
            c.TRUNCATEDS: np.array([False, False, False, True, False, False]),
            c.EPS_ID: np.array([1, 1, 1, 1, 2, 2]),
            c.T: np.array([0, 1, 2, 3, 0, 1]),
        }
    )

    out = n_step_transitions(batch, 3, 0.5)

    np.testing.assert_allclose(
        out[c.REWARDS], [1 + 1 + 0.75, 2 + 1.5 + 1, 3 + 2, 4, 10 + 10, 20], rtol=1e-6
    )
    # Rows 1..3 end on the truncated step: its final observation, no termination.
    assert out[c.NEW_OBS][:, 0].tolist() == [300, 400, 400, 400, 600, 600]
    assert out[c.TERMINATEDS].tolist() == [False, False, False, False, True, True]
    np.testing.assert_allclose(out[N_STEP_DISCOUNT], [0.125, 0.125, 0.25, 0.5, 0.25, 0.5])


def test_n_step_rejects_n_below_one():
    with pytest.raises(ValueError, match="n_step"):
        n_step_transitions(one_step_batch(np.random.default_rng(0)), 0, 0.9)


def sub_env_streams(num_envs: int, steps: int, seed: int) -> list[SampleBatch]:
    """Each sub-env's one-step rows over `steps` steps: episodes terminate (p 0.15) or are
    truncated (p 0.05); a row's observation is its id, unique over all sub-envs."""
    rng = np.random.default_rng(seed)
    streams = []
    for env in range(num_envs):
        eps_id, t, cols = env * 1000, 0, {"eps_id": [], "t": [], "term": [], "trunc": []}
        for _ in range(steps):
            end = rng.random()
            cols["eps_id"].append(eps_id)
            cols["t"].append(t)
            cols["term"].append(end < 0.15)
            cols["trunc"].append(0.15 <= end < 0.2)
            eps_id, t = (eps_id + 1, 0) if end < 0.2 else (eps_id, t + 1)
        ids = env * steps + np.arange(steps)
        streams.append(
            SampleBatch(
                {
                    c.OBS: ids[:, None].astype(np.float32),
                    c.ACTIONS: ids % 2,
                    c.REWARDS: rng.normal(size=steps).astype(np.float32),
                    c.NEW_OBS: (ids[:, None] + 0.5).astype(np.float32),
                    c.TERMINATEDS: np.asarray(cols["term"]),
                    c.TRUNCATEDS: np.asarray(cols["trunc"]),
                    c.EPS_ID: np.asarray(cols["eps_id"], np.int64),
                    c.T: np.asarray(cols["t"], np.int64),
                }
            )
        )
    return streams


def by_row_id(batch: SampleBatch) -> dict[int, tuple]:
    return {
        int(obs): (float(r), float(new_obs), bool(term), float(discount))
        for obs, r, new_obs, term, discount in zip(
            batch[c.OBS][:, 0],
            batch[c.REWARDS],
            batch[c.NEW_OBS][:, 0],
            batch[c.TERMINATEDS],
            batch[N_STEP_DISCOUNT],
        )
    }


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("fragment", [1, 2, 4])
def test_n_step_collector_spans_fragments_like_the_unsplit_episodes(n, fragment):
    num_envs, steps = 3, 40
    streams = sub_env_streams(num_envs, steps, seed=n * 10 + fragment)
    collector = NStepCollector(n, 0.9)
    emitted: dict[int, tuple] = {}
    for start in range(0, steps, fragment):  # env-major fragments, as a runner returns them
        batch = concat_samples([stream[start : start + fragment] for stream in streams])
        emitted.update(by_row_id(collector.add(batch)))

    # The reference: each sub-env's whole stream at once.
    expected = by_row_id(concat_samples([n_step_transitions(s, n, 0.9) for s in streams]))
    waiting = {int(obs) for obs in collector.waiting[c.OBS][:, 0]} if len(collector) else set()
    # Only rows of each sub-env's last, unfinished episode wait, at most n - 1 of them.
    assert len(waiting) <= num_envs * (n - 1)
    assert set(emitted) | waiting == set(expected) and not set(emitted) & waiting
    for row_id, values in emitted.items():
        np.testing.assert_allclose(values, expected[row_id], rtol=1e-5, err_msg=str(row_id))


def test_rows_of_an_episode_the_next_batch_does_not_continue_stop_waiting():
    stream = sub_env_streams(1, 40, seed=0)[0]
    open_rows = np.flatnonzero(~(stream[c.TERMINATEDS] | stream[c.TRUNCATEDS]))
    last = int(open_rows[0])  # a fragment ending here leaves its episode open
    collector = NStepCollector(3, 0.9)
    first = by_row_id(collector.add(stream[: last + 1]))
    assert len(collector) > 0
    held = {int(obs) for obs in collector.waiting[c.OBS][:, 0]}
    assert not held & set(first)
    # The next batch is another episode of a new runner: the held rows end where they are.
    other = sub_env_streams(2, 5, seed=1)[1]
    second = by_row_id(collector.add(other))
    expected = by_row_id(n_step_transitions(stream[: last + 1], 3, 0.9))
    for row_id in held:
        np.testing.assert_allclose(second[row_id], expected[row_id], rtol=1e-6)


# -------------------------------------------------------------------- save and load
def filled(buffer_class, seed: int, **kwargs):
    """A buffer that has wrapped around, had priorities set and been sampled an odd number
    of times (so its RNG is mid-way through a 64-bit draw)."""
    buffer = buffer_class(12, seed=seed, **kwargs)
    rng = np.random.default_rng(100 + seed)
    buffer.add(transitions(0, 9))
    buffer.add(transitions(9, 7))
    for _ in range(3):
        batch = buffer.sample(5)
        buffer.update_priorities(batch[BATCH_INDEXES], rng.normal(size=5))
    return buffer


def assert_same_storage(a: ReplayBuffer, b: ReplayBuffer) -> None:
    assert (len(a), a.next_index, a.capacity) == (len(b), b.next_index, b.capacity)
    assert set(a.storage) == set(b.storage)
    for key in a.storage:
        assert a.storage[key].dtype == b.storage[key].dtype
        np.testing.assert_array_equal(a.storage[key][: len(a)], b.storage[key][: len(b)])


def sample_sequence(buffer: ReplayBuffer, sizes=(3, 7, 1, 16)) -> list[list[int]]:
    return [buffer.sample(size)[BATCH_INDEXES].tolist() for size in sizes]


@pytest.mark.parametrize(
    "buffer_class",
    [
        ReplayBuffer,
        PrioritizedReplayBuffer,
    ],
)
def test_save_load_round_trip_continues_identically(buffer_class, tmp_path):
    original = filled(buffer_class, seed=0)
    path = tmp_path / "buffer.npz"
    original.save(path)
    loaded = buffer_class(12, seed=99)
    loaded.load(path)

    assert_same_storage(loaded, original)
    assert sample_sequence(loaded) == sample_sequence(original)
    # Adding after the load goes to the same slots.
    assert loaded.add(transitions(50, 3)).tolist() == original.add(transitions(50, 3)).tolist()
    assert_same_storage(loaded, original)


def test_save_load_restores_priorities_and_max_priority(tmp_path):
    original = filled(PrioritizedReplayBuffer, seed=1, alpha=0.6, beta=0.4)
    path = tmp_path / "buffer.npz"
    original.save(path)
    loaded = PrioritizedReplayBuffer(12, alpha=0.6, beta=0.4, seed=5)
    loaded.load(path)

    np.testing.assert_array_equal(loaded.tree.nodes, original.tree.nodes)
    assert loaded.max_priority == original.max_priority
    for _ in range(3):
        a, b = original.sample(9), loaded.sample(9)
        np.testing.assert_array_equal(a[BATCH_INDEXES], b[BATCH_INDEXES])
        np.testing.assert_array_equal(a[WEIGHTS], b[WEIGHTS])
    # New rows get the same (max) priority in both.
    original.add(transitions(40, 2))
    loaded.add(transitions(40, 2))
    np.testing.assert_array_equal(loaded.tree.nodes, original.tree.nodes)


def test_saved_file_is_plain_npz_readable_without_pickle(tmp_path):
    buffer = filled(PrioritizedReplayBuffer, seed=2)
    path = tmp_path / "buffer.npz"
    buffer.save(path)

    with np.load(path, allow_pickle=False) as data:
        files = set(data.files)
        assert {"meta", "rng", "priorities", "max_priority"} <= files
        assert {f"storage/{key}" for key in buffer.storage} <= files
        assert data["meta"].tolist() == [12, len(buffer), buffer.next_index]
        assert all(data[name].dtype != object for name in data.files)


def test_load_refuses_a_buffer_of_another_capacity(tmp_path):
    path = tmp_path / "buffer.npz"
    filled(ReplayBuffer, seed=3).save(path)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(13).load(path)


def test_empty_buffer_round_trip(tmp_path):
    path = tmp_path / "buffer.npz"
    ReplayBuffer(4, seed=0).save(path)
    loaded = ReplayBuffer(4, seed=1)
    loaded.load(path)
    assert len(loaded) == 0 and loaded.next_index == 0
    loaded.add(transitions(0, 2))
    assert loaded.storage[c.ACTIONS][:2].tolist() == [0, 1]
