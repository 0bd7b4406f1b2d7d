"""Replay buffers over numpy storage, and n-step transitions.

`ReplayBuffer` samples uniformly; `PrioritizedReplayBuffer` samples transition i with
probability p_i^alpha / sum_j p_j^alpha through a sum-tree and returns importance weights
(N * P(i))^-beta / max_j (N * P(j))^-beta (Schaul et al. 2016). Capacity is in transitions;
the oldest are overwritten first. State (`get_state`/`set_state`) is plain numpy arrays and
numbers, written with `np.savez` and read with `allow_pickle=False`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tunerl.core import columns as c
from tunerl.core.postprocessing import trajectory_ends
from tunerl.core.sample_batch import SampleBatch, concat_samples

N_STEP_DISCOUNT = "n_step_discount"
BATCH_INDEXES = "batch_indexes"
WEIGHTS = "weights"
# What `n_step_transitions` reads: a collector keeps these of the rows that wait.
N_STEP_INPUT_COLUMNS = (
    c.OBS,
    c.ACTIONS,
    c.REWARDS,
    c.NEW_OBS,
    c.TERMINATEDS,
    c.TRUNCATEDS,
    c.EPS_ID,
    c.T,
)


def n_step_transitions(
    batch: SampleBatch, n: int, gamma: float, end_of: np.ndarray | None = None
) -> SampleBatch:
    """Turns one-step rows into n-step transitions, without crossing an episode end or a
    fragment end: row t gets r_t + gamma r_{t+1} + ... over k <= n steps, the `new_obs` and
    `terminateds` of its k-th step, and `n_step_discount` = gamma^k for the bootstrap term.
    A truncation ends the sum like a termination but keeps bootstrapping (`terminateds`
    stays False), so the return beyond the time limit is estimated, not assumed zero.
    `end_of`: each row's `piece_end_of_rows`, when the caller has it already."""
    if n < 1:
        raise ValueError(f"n_step must be >= 1, got {n}.")
    rows = len(batch)
    rewards = batch[c.REWARDS].astype(np.float64)
    if end_of is None:
        end_of = piece_end_of_rows(trajectory_ends(batch))
    final = np.minimum(np.arange(rows) + n - 1, end_of)
    n_rewards = np.zeros(rows, dtype=np.float64)
    for k in range(n):
        index = np.arange(rows) + k
        valid = index <= final
        n_rewards[valid] += gamma**k * rewards[index[valid]]
    steps = final - np.arange(rows) + 1
    out = SampleBatch(
        {
            c.OBS: batch[c.OBS],
            c.ACTIONS: batch[c.ACTIONS],
            c.REWARDS: n_rewards.astype(np.float32),
            c.NEW_OBS: batch[c.NEW_OBS][final],
            c.TERMINATEDS: batch[c.TERMINATEDS][final],
            N_STEP_DISCOUNT: (gamma**steps).astype(np.float32),
        }
    )
    return out


def piece_end_of_rows(ends: np.ndarray) -> np.ndarray:
    """For every row, the last row of its trajectory piece: the first end at or after it."""
    end_rows = np.flatnonzero(ends)
    return end_rows[np.searchsorted(end_rows, np.arange(len(ends)))]


class NStepCollector:
    """n-step transitions across sample calls. A row whose n steps reach past the end of its
    sampled fragment waits, as a one-step row, for the next batch to bring the rest of its
    episode; with one env step per fragment (SAC's default) n_step would otherwise act as 1.
    Waiting rows whose episode the next batch does not continue (a runner restarted or timed
    out) are turned into transitions with the steps they have. Waiting rows are not written
    into checkpoints: a restored run's env runners start new episodes."""

    def __init__(self, n: int, gamma: float):
        if n < 1:
            raise ValueError(f"n_step must be >= 1, got {n}.")
        self.n, self.gamma = n, gamma
        self.waiting = SampleBatch()

    def __len__(self) -> int:
        return len(self.waiting)

    def add(self, batch: SampleBatch) -> SampleBatch:
        """The n-step transitions that `batch` completes (with the rows that waited)."""
        if self.n == 1:
            return n_step_transitions(batch, 1, self.gamma)
        batch = SampleBatch({key: batch[key] for key in N_STEP_INPUT_COLUMNS})
        num_waiting = len(self.waiting)
        rows = concat_samples([self.waiting, batch])
        if not len(rows):
            return SampleBatch()
        # Each episode's rows together and in time order: the rows that waited, then the
        # same episode's new rows.
        order = np.lexsort((rows[c.T], rows[c.EPS_ID]))
        rows = rows.select_rows(order)
        is_new = order >= num_waiting
        end_of = piece_end_of_rows(trajectory_ends(rows))
        episode_done = rows[c.TERMINATEDS].astype(bool) | rows[c.TRUNCATEDS].astype(bool)
        # Wait: fewer than n steps to the end of a piece that stops at the end of a new
        # fragment, i.e. the episode goes on in the next batch.
        wait = (end_of - np.arange(len(rows)) < self.n - 1) & ~episode_done[end_of] & is_new[end_of]
        self.waiting = rows.select_rows(wait)
        return n_step_transitions(rows, self.n, self.gamma, end_of).select_rows(~wait)


class ReplayBuffer:
    """Uniform replay of transitions (dicts of equally long arrays)."""

    def __init__(self, capacity: int, seed: int | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be a positive number of transitions, got {capacity}.")
        self.capacity = int(capacity)
        self.storage: dict[str, np.ndarray] = {}
        self.size = 0
        self.next_index = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, batch: SampleBatch) -> np.ndarray:
        """Stores the rows of `batch`; returns the slots they went to."""
        count = len(batch)
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        if not self.storage:
            self.storage = {
                key: np.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype)
                for key, value in batch.items()
            }
        elif set(batch) != set(self.storage):
            raise ValueError(
                f"Batch columns {sorted(batch)} differ from the buffer's {sorted(self.storage)}."
            )
        slots = (self.next_index + np.arange(count)) % self.capacity
        for key, value in batch.items():
            self.storage[key][slots] = value
        self.next_index = int((self.next_index + count) % self.capacity)
        self.size = min(self.size + count, self.capacity)
        return slots

    def sample(self, batch_size: int, **kwargs: Any) -> SampleBatch:
        if self.size == 0:
            raise ValueError("Cannot sample from an empty replay buffer.")
        slots = self.rng.integers(0, self.size, size=batch_size)
        return self._gather(slots)

    def _gather(self, slots: np.ndarray) -> SampleBatch:
        batch = SampleBatch({key: value[slots] for key, value in self.storage.items()})
        batch[BATCH_INDEXES] = slots
        return batch

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        """Uniform replay has no priorities."""

    # ------------------------------------------------------------------------ state
    def get_state(self) -> dict[str, np.ndarray]:
        state = {f"storage/{key}": value[: self.size] for key, value in self.storage.items()}
        state["meta"] = np.array([self.capacity, self.size, self.next_index], dtype=np.int64)
        rng = self.rng.bit_generator.state
        # Every part of PCG64's state, including the buffered 32-bit half-draw.
        state["rng"] = np.array(
            [
                str(rng["state"]["state"]),
                str(rng["state"]["inc"]),
                str(rng["has_uint32"]),
                str(rng["uinteger"]),
            ]
        )
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        capacity, size, next_index = (int(v) for v in state["meta"])
        if capacity != self.capacity:
            raise ValueError(f"Saved buffer capacity {capacity} != this buffer's {self.capacity}.")
        self.storage = {}
        for key, value in state.items():
            if key.startswith("storage/"):
                full = np.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype)
                full[:size] = value
                self.storage[key.removeprefix("storage/")] = full
        self.size, self.next_index = size, next_index
        rng_state = self.rng.bit_generator.state
        rng_state["state"] = {"state": int(state["rng"][0]), "inc": int(state["rng"][1])}
        rng_state["has_uint32"] = int(state["rng"][2])
        rng_state["uinteger"] = int(state["rng"][3])
        self.rng.bit_generator.state = rng_state

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "wb") as f:
            np.savez(f, **self.get_state())

    def load(self, path: str | os.PathLike) -> None:
        with np.load(Path(path), allow_pickle=False) as data:
            self.set_state({key: data[key] for key in data.files})


class SumTree:
    """Binary tree whose leaves hold priorities and inner nodes their sums: O(log N)
    updates and prefix-sum searches."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 1
        while self.size < capacity:
            self.size *= 2
        self.nodes = np.zeros(2 * self.size, dtype=np.float64)

    def total(self) -> float:
        return float(self.nodes[1])

    def set(self, slots: np.ndarray, values: np.ndarray) -> None:
        nodes = np.asarray(slots, dtype=np.int64) + self.size
        if len(nodes) == 0:
            return
        self.nodes[nodes] = np.asarray(values, dtype=np.float64)
        # Recompute the touched parents one level at a time (vectorized over the slots).
        nodes = np.unique(nodes // 2)
        while nodes[0] >= 1:
            self.nodes[nodes] = self.nodes[2 * nodes] + self.nodes[2 * nodes + 1]
            nodes = np.unique(nodes // 2)

    def get(self, slots: np.ndarray) -> np.ndarray:
        return self.nodes[np.asarray(slots) + self.size]

    def find(self, prefix_sums: np.ndarray) -> np.ndarray:
        """For each value v, the slot i with sum(p[:i]) <= v < sum(p[:i+1])."""
        nodes = np.ones(len(prefix_sums), dtype=np.int64)
        values = np.asarray(prefix_sums, dtype=np.float64).copy()
        while nodes[0] < self.size:
            left = 2 * nodes
            go_right = values >= self.nodes[left]
            values = np.where(go_right, values - self.nodes[left], values)
            nodes = np.where(go_right, left + 1, left)
        return np.minimum(nodes - self.size, self.capacity - 1)


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay. New transitions get the largest priority seen so
    far, so each is replayed at least once soon."""

    def __init__(
        self,
        capacity: int,
        alpha: float = 0.6,
        beta: float = 0.4,
        epsilon: float = 1e-6,
        seed: int | None = None,
    ):
        super().__init__(capacity, seed)
        if alpha < 0 or not 0 <= beta <= 1:
            raise ValueError(f"alpha must be >= 0 and beta in [0, 1]; got {alpha}, {beta}.")
        self.alpha, self.beta, self.epsilon = alpha, beta, epsilon
        self.tree = SumTree(self.capacity)
        self.max_priority = 1.0

    def add(self, batch: SampleBatch) -> np.ndarray:
        slots = super().add(batch)
        self.tree.set(slots, np.full(len(slots), self.max_priority**self.alpha))
        return slots

    def sample(self, batch_size: int, beta: float | None = None, **kwargs: Any) -> SampleBatch:
        """Stratified proportional sampling, with importance weights in `weights`."""
        if self.size == 0:
            raise ValueError("Cannot sample from an empty replay buffer.")
        beta = self.beta if beta is None else beta
        total = self.tree.total()
        bounds = np.linspace(0.0, total, batch_size + 1)
        targets = self.rng.uniform(bounds[:-1], bounds[1:])
        slots = np.minimum(self.tree.find(targets), self.size - 1)
        probabilities = self.tree.get(slots) / total
        min_probability = self._min_priority() / total
        weights = (probabilities * self.size) ** -beta / (min_probability * self.size) ** -beta
        batch = self._gather(slots)
        batch[WEIGHTS] = weights.astype(np.float32)
        return batch

    def _min_priority(self) -> float:
        return float(self.tree.get(np.arange(self.size)).min())

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        priorities = np.abs(np.asarray(td_errors, dtype=np.float64)) + self.epsilon
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self.tree.set(slots, priorities**self.alpha)

    def get_state(self) -> dict[str, np.ndarray]:
        state = super().get_state()
        state["priorities"] = self.tree.get(np.arange(self.size))
        state["max_priority"] = np.array(self.max_priority)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        super().set_state(state)
        self.tree = SumTree(self.capacity)
        self.tree.set(np.arange(self.size), state["priorities"])
        self.max_priority = float(state["max_priority"])


BUFFER_TYPES = {"ReplayBuffer": ReplayBuffer, "PrioritizedReplayBuffer": PrioritizedReplayBuffer}


def make_replay_buffer(config: dict[str, Any], seed: int | None = None) -> ReplayBuffer:
    """From `replay_buffer_config`: {"type": "PrioritizedReplayBuffer", "capacity": ...,
    "alpha": ..., "beta": ...}."""
    options = dict(config)
    kind = options.pop("type", "ReplayBuffer")
    if kind not in BUFFER_TYPES:
        raise ValueError(
            f"replay_buffer_config type {kind!r} is not one of {sorted(BUFFER_TYPES)}."
        )
    options.pop("beta_final", None)
    options.pop("beta_annealing_steps", None)
    try:
        return BUFFER_TYPES[kind](seed=seed, **options)
    except TypeError as error:
        raise ValueError(f"replay_buffer_config {config}: {error}") from None


def check_buffer_config(value: Any) -> str | None:
    """Config check of `replay_buffer_config`: None if a buffer can be built from it."""
    if not isinstance(value, dict):
        return "must be a dict like {'type': 'PrioritizedReplayBuffer', 'capacity': 50000}"
    try:
        make_replay_buffer(value)
    except ValueError as error:
        return str(error)
    return None
