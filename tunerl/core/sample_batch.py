"""SampleBatch: a dict of equally long numpy columns, with RLlib's column names.

Rows are environment steps. A runner writes each sub-environment's steps contiguously and in
time order, so an episode's steps stay together until a batch is shuffled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from tunerl.core import columns
from tunerl.core.columns import DEFAULT_MODULE_ID


class SampleBatch(dict):
    """Columns of equal length; `len(batch)` is the number of rows (env steps)."""

    OBS = columns.OBS
    ACTIONS = columns.ACTIONS
    REWARDS = columns.REWARDS
    TERMINATEDS = columns.TERMINATEDS
    TRUNCATEDS = columns.TRUNCATEDS
    NEXT_OBS = columns.NEW_OBS
    ACTION_LOGP = columns.ACTION_LOGP
    ACTION_DIST_INPUTS = columns.ACTION_DIST_INPUTS
    VF_PREDS = columns.VF_PREDS
    ADVANTAGES = columns.ADVANTAGES
    VALUE_TARGETS = columns.VALUE_TARGETS
    EPS_ID = columns.EPS_ID
    T = columns.T

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key, value in self.items():
            if not isinstance(value, np.ndarray):
                super().__setitem__(key, np.asarray(value))
        lengths = {key: len(value) for key, value in self.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"SampleBatch columns must have equal lengths, got {lengths}.")

    def __setitem__(self, key: str, value) -> None:
        value = np.asarray(value)
        if self and len(value) != len(self):
            raise ValueError(
                f"SampleBatch column {key!r} has {len(value)} rows; the batch has {len(self)}."
            )
        super().__setitem__(key, value)

    def __len__(self) -> int:
        for value in self.values():
            return len(value)
        return 0

    @property
    def count(self) -> int:
        """Number of rows (RLlib's name for `len(batch)`)."""
        return len(self)

    def copy(self) -> SampleBatch:
        return SampleBatch({key: value.copy() for key, value in self.items()})

    def slice(self, start: int, end: int) -> SampleBatch:
        return SampleBatch({key: value[start:end] for key, value in self.items()})

    def __getitem__(self, key):
        if isinstance(key, slice):
            return SampleBatch({name: value[key] for name, value in self.items()})
        return super().__getitem__(key)

    def select_rows(self, indices: np.ndarray) -> SampleBatch:
        """The rows at `indices` (integer positions or a boolean mask), as a new batch."""
        return SampleBatch({key: value[indices] for key, value in self.items()})

    def shuffle(self, rng: np.random.Generator | None = None) -> SampleBatch:
        """Shuffles the rows in place (the same permutation for every column); returns self."""
        rng = rng if rng is not None else np.random.default_rng()
        permutation = rng.permutation(len(self))
        for key, value in self.items():
            super().__setitem__(key, value[permutation])
        return self

    def minibatches(
        self, minibatch_size: int, rng: np.random.Generator | None = None
    ) -> Iterator[SampleBatch]:
        """Yields minibatches of `minibatch_size` rows covering the batch once; the rows are
        drawn in a random order when `rng` is given. The last, shorter minibatch is kept."""
        if minibatch_size <= 0:
            raise ValueError(f"minibatch_size must be a positive integer, got {minibatch_size}.")
        order = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
        for start in range(0, len(self), minibatch_size):
            yield self.select_rows(order[start : start + minibatch_size])

    def split_by_episode(self) -> list[SampleBatch]:
        """One batch per contiguous run of rows with the same `eps_id`, in order."""
        if len(self) == 0:
            return []
        eps_id = self[columns.EPS_ID]
        starts = np.flatnonzero(np.r_[True, eps_id[1:] != eps_id[:-1]])
        ends = np.r_[starts[1:], len(self)]
        return [self.slice(start, end) for start, end in zip(starts, ends)]

    @staticmethod
    def concat_samples(batches: Sequence[SampleBatch | MultiAgentBatch]) -> Any:
        return concat_samples(batches)

    def summary(self) -> str:
        """A table with each column's shape, dtype, min, max and mean."""
        lines = [f"SampleBatch({len(self)} rows)"]
        width = max((len(key) for key in self), default=0)
        for key, value in self.items():
            if value.size and (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
                numbers = value.astype(np.float64)
                stats = f"min={numbers.min():.4g} max={numbers.max():.4g} mean={numbers.mean():.4g}"
            else:
                stats = ""
            lines.append(
                f"  {key:<{width}}  shape={value.shape!s:<14} dtype={value.dtype!s:<8} {stats}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def concat_samples(batches: Sequence[SampleBatch | MultiAgentBatch]) -> Any:
    """Concatenates batches row-wise; they must hold the same columns. MultiAgentBatches are
    concatenated module by module, their env steps summed."""
    if batches and all(isinstance(batch, MultiAgentBatch) for batch in batches):
        return MultiAgentBatch.concat_samples(batches)  # type: ignore[arg-type]
    if any(isinstance(batch, MultiAgentBatch) for batch in batches):
        raise TypeError("Cannot concatenate SampleBatches with MultiAgentBatches.")
    batches = [batch for batch in batches if len(batch)]
    if not batches:
        return SampleBatch()
    keys = set(batches[0])
    for batch in batches[1:]:
        if set(batch) != keys:
            raise ValueError(
                f"Cannot concatenate SampleBatches with different columns: {sorted(keys)} vs "
                f"{sorted(batch)}."
            )
    return SampleBatch(
        {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
    )


class MultiAgentBatch:
    """SampleBatches keyed by module id: what flows from sampling to learning. `env_steps`
    counts environment steps, which can be fewer than the rows when several agents act in
    one step; `len(batch)` is `env_steps`."""

    def __init__(self, policy_batches: Mapping[str, SampleBatch], env_steps: int):
        self.policy_batches = dict(policy_batches)
        self.env_steps = int(env_steps)

    @staticmethod
    def wrap_as_needed(
        batch: SampleBatch | MultiAgentBatch, env_steps: int | None = None
    ) -> MultiAgentBatch:
        """A SampleBatch becomes a MultiAgentBatch with one module, `default_policy`."""
        if isinstance(batch, MultiAgentBatch):
            return batch
        steps = len(batch) if env_steps is None else env_steps
        return MultiAgentBatch({DEFAULT_MODULE_ID: batch}, steps)

    @staticmethod
    def concat_samples(batches: Sequence[MultiAgentBatch]) -> MultiAgentBatch:
        """Module by module, in the order the modules first appear; env steps summed."""
        per_module: dict[str, list[SampleBatch]] = {}
        for batch in batches:
            for module_id, module_batch in batch.policy_batches.items():
                per_module.setdefault(module_id, []).append(module_batch)
        return MultiAgentBatch(
            {module_id: concat_samples(parts) for module_id, parts in per_module.items()},
            sum(batch.env_steps for batch in batches),
        )

    def agent_steps(self) -> int:
        return sum(len(batch) for batch in self.policy_batches.values())

    def module_ids(self) -> list[str]:
        return list(self.policy_batches)

    def copy(self) -> MultiAgentBatch:
        return MultiAgentBatch(
            {mid: batch.copy() for mid, batch in self.policy_batches.items()}, self.env_steps
        )

    def __getitem__(self, module_id: str) -> SampleBatch:
        if module_id not in self.policy_batches:
            raise KeyError(
                f"No module {module_id!r} in this MultiAgentBatch; it holds "
                f"{sorted(self.policy_batches)}."
            )
        return self.policy_batches[module_id]

    def __contains__(self, module_id: object) -> bool:
        return module_id in self.policy_batches

    def __len__(self) -> int:
        return self.env_steps

    def __repr__(self) -> str:
        parts = ", ".join(f"{mid}: {len(b)} rows" for mid, b in self.policy_batches.items())
        return f"MultiAgentBatch(env_steps={self.env_steps}, {{{parts}}})"
