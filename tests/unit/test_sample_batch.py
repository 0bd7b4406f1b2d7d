"""SampleBatch, concat_samples and MultiAgentBatch."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tunerl import MultiAgentBatch, SampleBatch, concat_samples
from tunerl.core import columns as c


def make_batch(n: int = 10) -> SampleBatch:
    """Rows whose columns all encode the row number, so misaligned rows are visible."""
    rows = np.arange(n)
    return SampleBatch(
        {
            c.OBS: np.stack([rows, -rows], axis=1).astype(np.float32),
            c.ACTIONS: rows.astype(np.int64),
            c.REWARDS: rows.astype(np.float32) / 10,
            c.TERMINATEDS: rows % 3 == 0,
            c.EPS_ID: rows // 4,
            c.T: rows % 4,
        }
    )


def assert_rows_aligned(batch: SampleBatch) -> None:
    row = batch[c.ACTIONS]
    np.testing.assert_array_equal(batch[c.OBS][:, 0], row)
    np.testing.assert_array_equal(batch[c.OBS][:, 1], -row)
    np.testing.assert_allclose(batch[c.REWARDS], row / 10, rtol=1e-6)
    np.testing.assert_array_equal(batch[c.TERMINATEDS], row % 3 == 0)
    np.testing.assert_array_equal(batch[c.EPS_ID], row // 4)
    np.testing.assert_array_equal(batch[c.T], row % 4)


# ----------------------------------------------------------------------- construction
def test_columns_become_numpy_arrays_and_len_counts_rows():
    batch = SampleBatch({c.REWARDS: [1.0, 2.0, 3.0], c.ACTIONS: (0, 1, 0)})
    assert isinstance(batch[c.REWARDS], np.ndarray)
    assert isinstance(batch[c.ACTIONS], np.ndarray)
    assert len(batch) == 3 and batch.count == 3
    assert len(SampleBatch()) == 0


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="equal lengths"):
        SampleBatch({c.REWARDS: [1.0, 2.0], c.ACTIONS: [0]})


def test_adding_a_column_of_the_wrong_length_is_refused():
    batch = make_batch(4)
    with pytest.raises(ValueError, match=r"'advantages' has 3 rows; the batch has 4"):
        batch[c.ADVANTAGES] = np.zeros(3)
    assert c.ADVANTAGES not in batch
    batch[c.ADVANTAGES] = [0.0, 1.0, 2.0, 3.0]
    assert isinstance(batch[c.ADVANTAGES], np.ndarray)


# ------------------------------------------------------------------------------ rows
def test_slice_and_slice_syntax_return_batches_of_those_rows():
    batch = make_batch(10)
    for part in (batch.slice(2, 7), batch[2:7]):
        assert isinstance(part, SampleBatch)
        assert len(part) == 5
        np.testing.assert_array_equal(part[c.ACTIONS], np.arange(2, 7))
        assert_rows_aligned(part)


def test_select_rows_by_index_and_by_mask():
    batch = make_batch(10)
    picked = batch.select_rows(np.array([7, 0, 3]))
    np.testing.assert_array_equal(picked[c.ACTIONS], [7, 0, 3])
    assert_rows_aligned(picked)

    masked = batch.select_rows(batch[c.TERMINATEDS])
    np.testing.assert_array_equal(masked[c.ACTIONS], [0, 3, 6, 9])
    assert_rows_aligned(masked)


def test_copy_is_independent():
    batch = make_batch(5)
    copied = batch.copy()
    copied[c.REWARDS][0] = 99.0
    assert batch[c.REWARDS][0] == 0.0


def test_shuffle_permutes_rows_and_keeps_them_aligned():
    batch = make_batch(50)
    returned = batch.shuffle(np.random.default_rng(0))
    assert returned is batch
    assert_rows_aligned(batch)
    assert not np.array_equal(batch[c.ACTIONS], np.arange(50))
    assert sorted(batch[c.ACTIONS].tolist()) == list(range(50))


def test_shuffle_with_the_same_rng_seed_gives_the_same_order():
    first = make_batch(30).shuffle(np.random.default_rng(7))
    second = make_batch(30).shuffle(np.random.default_rng(7))
    np.testing.assert_array_equal(first[c.ACTIONS], second[c.ACTIONS])


@pytest.mark.parametrize("n, size", [(10, 3), (12, 4), (5, 10), (7, 1)])
@pytest.mark.parametrize("shuffled", [False, True])
def test_minibatches_cover_every_row_exactly_once(n, size, shuffled):
    batch = make_batch(n)
    rng = np.random.default_rng(1) if shuffled else None
    minibatches = list(batch.minibatches(size, rng))

    seen = np.concatenate([mb[c.ACTIONS] for mb in minibatches])
    assert sorted(seen.tolist()) == list(range(n))
    assert [len(mb) for mb in minibatches[:-1]] == [size] * (len(minibatches) - 1)
    assert 1 <= len(minibatches[-1]) <= size
    for mb in minibatches:
        assert_rows_aligned(mb)
    if not shuffled:
        np.testing.assert_array_equal(seen, np.arange(n))


def test_minibatches_refuse_a_non_positive_size():
    with pytest.raises(ValueError, match="minibatch_size"):
        list(make_batch(4).minibatches(0))


def test_split_by_episode_gives_contiguous_runs_in_order():
    batch = SampleBatch({c.EPS_ID: [5, 5, 5, 2, 2, 9, 5], c.REWARDS: np.arange(7.0)})
    episodes = batch.split_by_episode()
    assert [ep[c.EPS_ID].tolist() for ep in episodes] == [[5, 5, 5], [2, 2], [9], [5]]
    assert [ep[c.REWARDS].tolist() for ep in episodes] == [[0, 1, 2], [3, 4], [5], [6]]
    assert SampleBatch().split_by_episode() == []


# ------------------------------------------------------------------------ concatenate
def test_concat_samples_appends_rows_in_order():
    batch = make_batch(10)
    joined = concat_samples([batch.slice(0, 3), batch.slice(3, 3), batch.slice(3, 10)])
    assert len(joined) == 10
    for key in batch:
        np.testing.assert_array_equal(joined[key], batch[key])
    assert_rows_aligned(joined)
    np.testing.assert_array_equal(
        SampleBatch.concat_samples([batch.slice(0, 2), batch.slice(2, 4)])[c.ACTIONS], [0, 1, 2, 3]
    )
    assert len(concat_samples([])) == 0


def test_concat_samples_refuses_mismatched_columns():
    first = make_batch(3)
    second = make_batch(3)
    del second[c.REWARDS]
    with pytest.raises(ValueError, match="different columns") as error:
        concat_samples([first, second])
    assert c.REWARDS in str(error.value)


# ---------------------------------------------------------------------------- summary
def test_summary_lists_each_column_with_shape_dtype_and_statistics():
    batch = SampleBatch(
        {
            c.OBS: np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32),
            c.ACTIONS: np.array([0, 1, 5], np.int64),
            c.TERMINATEDS: np.array([False, True, True]),
        }
    )
    summary = batch.summary()
    lines = summary.splitlines()
    assert lines[0] == "SampleBatch(3 rows)"
    assert repr(batch) == summary

    def line_of(column: str) -> str:
        (line,) = [line for line in lines if line.split()[0] == column]
        return line

    obs = line_of(c.OBS)
    assert "shape=(3, 2)" in obs and "dtype=float32" in obs
    assert re.search(r"min=1\b", obs) and re.search(r"max=6\b", obs)
    assert re.search(r"mean=3\.5\b", obs)
    actions = line_of(c.ACTIONS)
    assert "shape=(3,)" in actions and "dtype=int64" in actions
    assert "min=0" in actions and "max=5" in actions and "mean=2" in actions
    terminateds = line_of(c.TERMINATEDS)
    assert "dtype=bool" in terminateds
    assert "min=0" in terminateds and "max=1" in terminateds and "mean=0.6667" in terminateds


# ------------------------------------------------------------------------ multi-agent
def test_wrap_as_needed_puts_a_sample_batch_under_default_policy():
    batch = make_batch(6)
    wrapped = MultiAgentBatch.wrap_as_needed(batch)
    assert isinstance(wrapped, MultiAgentBatch)
    assert list(wrapped.policy_batches) == [c.DEFAULT_MODULE_ID]
    assert wrapped[c.DEFAULT_MODULE_ID] is batch
    assert len(wrapped) == wrapped.env_steps == 6
    assert wrapped.agent_steps() == 6


def test_wrap_as_needed_keeps_a_multi_agent_batch_and_counts_env_steps_separately():
    ma = MultiAgentBatch({"a": make_batch(4), "b": make_batch(4)}, env_steps=4)
    assert MultiAgentBatch.wrap_as_needed(ma) is ma
    assert len(ma) == 4
    assert ma.agent_steps() == 8
    assert MultiAgentBatch.wrap_as_needed(make_batch(6), env_steps=3).env_steps == 3
