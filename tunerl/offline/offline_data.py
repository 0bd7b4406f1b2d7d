"""Reading offline data in the algorithm's own process with pyarrow: Parquet files (a folder,
a glob or a list), checked against the env's spaces before training, served as shuffled
minibatches. A dataset that fits `shuffle_buffer_size` rows is read once and kept; a larger
one streams through a buffer of that many rows (row groups in random order, rows shuffled
within the buffer), so memory stays bounded (benchmarks/offline_read_memory.py).

RLlib's files read as they are when their columns are plain (RLlib's
`output_compress_columns=[]`); columns RLlib packed with cloudpickle are refused, since
reading them would run code from the file.

Multi-agent data: an `OfflineData` for one module id (`module_id=`) reads only the rows
whose `module_id` column holds it (a file without the column: every row), checked against
that module's spaces; `OfflineData.for_modules` reads one per module of a config and serves
`{module_id: rows}` batches (`ModuleBatches`)."""

from __future__ import annotations

import glob
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tunerl.core import columns as c
from tunerl.core.rl_module import MultiRLModuleSpec, flattened_by_env_runner
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch
from tunerl.core.spaces_json import space_to_json
from tunerl.offline.action_units import env_to_module_units
from tunerl.offline.output_writer import METADATA_KEY, PARQUET_SUFFIX

logger = logging.getLogger(__name__)

# Every transition needs these; the rest are optional (truncateds: False; eps_id and t:
# needed for episode returns; action_logp: needed for importance sampling).
REQUIRED_COLUMNS = (c.OBS, c.ACTIONS, c.REWARDS, c.NEW_OBS, c.TERMINATEDS)
READ_COLUMNS = (*REQUIRED_COLUMNS, c.TRUNCATEDS, c.EPS_ID, c.T, c.ACTION_LOGP)
# Discounted return to the episode's end, per row (`OfflineData(returns_gamma=...)`).
RETURNS = "returns"
_REEXPORT = (
    "RLlib packs such columns with cloudpickle (its default output_compress_columns), and "
    "unpickling them would run code from the file, so tunerl does not read them. Record "
    "again with RLlib's .offline_data(output_compress_columns=[]), or write the column as "
    "plain numbers (a list of floats per row)."
)


class OfflineDataError(ValueError):
    """A dataset that cannot be trained on; the message names the file and the column."""


def resolve_input(input_: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The Parquet files `input_` names: a folder (its *.parquet files, recursively), a
    glob, a file, or a list of any of these; hidden files (a writer's temporary ones) are
    skipped. No file is an error naming what was searched."""
    items = [input_] if isinstance(input_, str | os.PathLike) else list(input_)
    files: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(path.rglob(f"*{PARQUET_SUFFIX}"))
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files += [p for p in found if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise OfflineDataError(
            f"offline_data(input_={input_!r}) names no Parquet file: give a folder that holds "
            f"*{PARQUET_SUFFIX} files, a glob, a file, or a list of these."
        )
    return files


def _flat_shape(space: gym.Space) -> tuple[int, ...]:
    """A row's shape in a module's batch (Dict and Tuple arrive flattened)."""
    if flattened_by_env_runner(space):
        return (int(gym.spaces.utils.flatdim(space)),)
    return tuple(space.shape)


@dataclass
class _Chunk:
    path: Path
    row_group: int
    num_rows: int  # the rows read: the module's, with a module filter
    first_row: int  # in the whole dataset read, in file order
    rows: np.ndarray | None = None  # which rows of the row group (None: all)


def _column_to_numpy(array: pa.ChunkedArray, rows: int, width: int, where: str) -> np.ndarray:
    """A column as (rows, width) numbers, from plain values or (fixed-size) lists (Ray's
    tensor extension type too). `where` names file and column for the error."""
    array = array.combine_chunks()
    if isinstance(array.type, pa.ExtensionType):
        array = array.storage
    kind = array.type
    if (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_string(kind)
        or (pa.types.is_large_string(kind))
    ):
        raise OfflineDataError(f"{where} holds {kind} values, not numbers. {_REEXPORT}")
    if array.null_count:
        raise OfflineDataError(f"{where} has {array.null_count} missing (null) values.")
    while (
        pa.types.is_fixed_size_list(kind)
        or pa.types.is_list(kind)
        or (pa.types.is_large_list(kind))
    ):
        array = array.flatten()
        kind = array.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise OfflineDataError(f"{where} holds {kind} values, not numbers.")
    values = array.to_numpy(zero_copy_only=False)
    if values.size != rows * width:
        raise OfflineDataError(
            f"{where} holds {values.size / max(rows, 1):g} values per row; the env's space "
            f"needs {width}."
        )
    return values.reshape(rows, width)


class OfflineData:
    """Shuffled minibatches of transitions from Parquet files, as the module expects them:
    observations of the env's shape, actions in the module's units (`normalize_actions`),
    and, with `returns_gamma`, each row's discounted return to its episode's end.

    `module_id`: read only the rows of that module (their `module_id` column); a file
    without that column counts as the module's, every row of it. A file with no row of the
    module is skipped unchecked (its spaces are another module's); no row at all is an
    `OfflineDataError` naming the module, the files and the module ids they hold. None (the
    default) reads every row."""

    def __init__(
        self,
        input_: str | os.PathLike | Sequence[str | os.PathLike],
        observation_space: gym.Space,
        action_space: gym.Space,
        *,
        module_id: str | None = None,
        normalize_actions: bool = True,
        shuffle_buffer_size: int = 100_000,
        returns_gamma: float | None = None,
        seed: int | None = None,
    ):
        self.files = resolve_input(input_)
        self.module_id = module_id
        # The module ids the files' `module_id` columns hold (read with a module filter only).
        self.file_module_ids: set[str] = set()
        self.observation_space = observation_space
        self.action_space = action_space
        self.normalize_actions = normalize_actions
        self.shuffle_buffer_size = shuffle_buffer_size
        self._rng = np.random.default_rng(seed)
        self._obs_shape = _flat_shape(observation_space)
        self._action_shape = _flat_shape(action_space)
        self._returns: np.ndarray | None = None
        self._chunks = self._check_files()
        self.num_rows = sum(chunk.num_rows for chunk in self._chunks)
        self.has_action_logp = all(
            c.ACTION_LOGP in pq.read_schema(path).names for path in self._files_read()
        )
        self._returns = self._episode_returns(returns_gamma) if returns_gamma is not None else None
        self._buffer: SampleBatch | None = None
        self._order = np.zeros(0, np.int64)
        self._cursor = 0
        self._next_chunk = 0
        self._chunk_order = np.arange(len(self._chunks))

    @classmethod
    def for_modules(
        cls,
        config: Any,
        module_spec: MultiRLModuleSpec,
        seed: int,
        returns_gamma: float | None = None,
    ) -> ModuleBatches:
        """The data `config.offline_data(input_=..., shuffle_buffer_size=...)` names, read
        for every module of `module_spec` (a MultiRLModuleSpec) with its own spaces: module
        i in sorted order shuffles from `seed + i`. A single-agent config (one module,
        `default_policy`) reads every row; a multi-agent one gives each module the rows of
        its `module_id` and logs a warning for rows of modules it does not have (ignored)."""
        if config.input_ is None:
            raise OfflineDataError(
                f"{type(config).__name__} trains on recorded data and has no input: give "
                ".offline_data(input_=...) a folder of Parquet files, a glob or a list of files "
                "(record them with any algorithm's .offline_data(output=...))."
            )
        specs = module_spec.module_specs
        single_agent = list(specs) == [c.DEFAULT_MODULE_ID]
        data = {
            module_id: cls(
                config.input_,
                specs[module_id].observation_space,
                specs[module_id].action_space,
                module_id=None if single_agent else module_id,
                normalize_actions=config.normalize_actions,
                shuffle_buffer_size=config.shuffle_buffer_size,
                returns_gamma=returns_gamma,
                seed=seed + index,
            )
            for index, module_id in enumerate(sorted(specs))
        }
        ignored = set().union(*(d.file_module_ids for d in data.values())) - set(specs)
        if ignored:
            logger.warning(
                "offline_data(input_=%r) holds rows of the modules %s, which this config does "
                "not have (its modules: %s); they are not trained on.",
                config.input_,
                sorted(ignored),
                sorted(specs),
            )
        return ModuleBatches(data)

    # ------------------------------------------------------------------- checks
    def _check_files(self) -> list[_Chunk]:
        chunks: list[_Chunk] = []
        first_row = 0
        expected_obs = space_to_json(self.observation_space)
        expected_actions = space_to_json(self.action_space)
        for path in self.files:
            try:
                parquet = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as error:
                raise OfflineDataError(
                    f"{path} is not a readable Parquet file ({error}); a file cut short or "
                    "overwritten has no valid footer. Remove it or record it again."
                ) from None
            groups = self._module_rows(parquet)
            if not any(rows is None or len(rows) for rows in groups):
                continue  # another module's file
            names = parquet.schema_arrow.names
            missing = [name for name in REQUIRED_COLUMNS if name not in names]
            if missing:
                raise OfflineDataError(
                    f"{path} has no column {missing[0]!r} (its columns: {names}); a "
                    f"transition needs {list(REQUIRED_COLUMNS)}."
                )
            metadata = (parquet.schema_arrow.metadata or {}).get(METADATA_KEY)
            if metadata is not None:
                recorded = json.loads(metadata)
                for key, expected in (
                    ("observation_space", expected_obs),
                    ("action_space", expected_actions),
                ):
                    if recorded.get(key) != expected:
                        raise OfflineDataError(
                            f"{path} was recorded with {key} {recorded.get(key)}, but the "
                            f"{self._whose()} has {expected}: train on the env the data was "
                            "recorded in."
                        )
            for group, rows in enumerate(groups):
                count = parquet.metadata.row_group(group).num_rows if rows is None else len(rows)
                if count:
                    chunks.append(_Chunk(path, group, count, first_row, rows))
                    first_row += count
        if not chunks and self.module_id is not None:
            shown = [str(p) for p in self.files[:3]] + (["..."] if len(self.files) > 3 else [])
            raise OfflineDataError(
                f"The offline data holds no row of the module {self.module_id!r}: its "
                f"{len(self.files)} files {shown} hold rows of the modules "
                f"{sorted(self.file_module_ids)} (their 'module_id' column). Record data for "
                "this module, or map the config's agents to the modules the data holds."
            )
        # The first chunk of every file is read now: shapes and dtypes fail before training.
        seen: set[Path] = set()
        for chunk in chunks:
            if chunk.path not in seen:
                seen.add(chunk.path)
                self._read_chunk(chunk)
        return chunks

    def _module_rows(self, parquet: pq.ParquetFile) -> list[np.ndarray | None]:
        """Per row group, the indices of the rows of `self.module_id` (None: every row,
        without a module filter or a `module_id` column)."""
        groups = range(parquet.num_row_groups)
        if self.module_id is None or c.MODULE_ID not in parquet.schema_arrow.names:
            return [None for _ in groups]
        found = []
        for group in groups:
            ids = parquet.read_row_group(group, columns=[c.MODULE_ID])[c.MODULE_ID]
            ids = ids.cast(pa.string())
            self.file_module_ids.update(pc.unique(pc.drop_null(ids)).to_pylist())
            mine = pc.equal(ids, self.module_id).fill_null(False)
            found.append(np.flatnonzero(mine.to_numpy(zero_copy_only=False)))
        return found

    def _whose(self) -> str:
        return "env" if self.module_id is None else f"module {self.module_id!r}"

    def _files_read(self) -> list[Path]:
        return list(dict.fromkeys(chunk.path for chunk in self._chunks))

    def _read_columns(self, chunk: _Chunk, names: Sequence[str]) -> pa.Table:
        """Columns `names` (those the file has) of the chunk's rows."""
        parquet = pq.ParquetFile(chunk.path)
        names = [n for n in names if n in parquet.schema_arrow.names]
        try:
            table = parquet.read_row_group(chunk.row_group, columns=names)
        except (pa.ArrowException, OSError) as error:
            raise OfflineDataError(
                f"{chunk.path}: row group {chunk.row_group} cannot be read ({error})."
            ) from None
        return table if chunk.rows is None else table.take(chunk.rows)

    # ----------------------------------------------------------------- reading
    def _read_chunk(self, chunk: _Chunk) -> SampleBatch:
        table = self._read_columns(chunk, READ_COLUMNS)
        rows = table.num_rows
        obs_width = math.prod(self._obs_shape)
        action_width = math.prod(self._action_shape)
        where = f"{chunk.path}, column"
        batch = SampleBatch()
        for name in (c.OBS, c.NEW_OBS):
            values = _column_to_numpy(table[name], rows, obs_width, f"{where} {name!r}")
            batch[name] = values.reshape(rows, *self._obs_shape).astype(
                np.float32 if np.issubdtype(values.dtype, np.floating) else values.dtype
            )
        actions = _column_to_numpy(table[c.ACTIONS], rows, action_width, f"{where} 'actions'")
        batch[c.ACTIONS] = self._module_actions(actions, f"{where} 'actions'")
        batch[c.REWARDS] = _column_to_numpy(table[c.REWARDS], rows, 1, f"{where} 'rewards'")[
            :, 0
        ].astype(np.float32)
        for name in (c.TERMINATEDS, c.TRUNCATEDS):
            if name in table.column_names:
                batch[name] = _column_to_numpy(table[name], rows, 1, f"{where} {name!r}")[
                    :, 0
                ].astype(bool)
            else:
                batch[name] = np.zeros(rows, bool)
        if c.ACTION_LOGP in table.column_names:
            batch[c.ACTION_LOGP] = _column_to_numpy(
                table[c.ACTION_LOGP], rows, 1, f"{where} 'action_logp'"
            )[:, 0].astype(np.float32)
        if self._returns is not None:
            batch[RETURNS] = self._returns[chunk.first_row : chunk.first_row + rows]
        return batch

    def _module_actions(self, actions: np.ndarray, where: str) -> np.ndarray:
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            if not np.issubdtype(actions.dtype, np.integer):
                raise OfflineDataError(
                    f"{where} holds {actions.dtype} values; {space} needs integers."
                )
            low, high = int(space.start), int(space.start) + int(space.n) - 1
            bad = (actions < low) | (actions > high)
            if bad.any():
                raise OfflineDataError(
                    f"{where} holds the action {int(actions[bad][0])}, outside {space} "
                    f"(allowed: {low}..{high})."
                )
            return env_to_module_units(space, actions[:, 0], self.normalize_actions)
        module = env_to_module_units(space, actions, self.normalize_actions)
        return module.reshape(len(actions), *self._action_shape)

    def _episode_returns(self, gamma: float) -> np.ndarray:
        """Each row's discounted sum of rewards to its episode's end (rows of an episode
        ordered by `t`), from one pass over the small columns eps_id, agent_id, t and
        rewards. An episode is one agent's: rows grouped by (eps_id, agent_id), since the
        agents of a multi-agent episode share its eps_id in RLlib's files. An episode cut by
        a time limit or the end of the recording is not bootstrapped."""
        rewards = []
        for chunk in self._chunks:
            table = self._read_columns(chunk, [c.REWARDS])
            rewards.append(table[c.REWARDS].to_numpy().astype(np.float64))
        episode, step = self._episodes("this algorithm needs each row's episode to compute returns")
        return discounted_returns(episode, step, np.concatenate(rewards), gamma)

    def _episodes(self, why: str, need_t: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Each row's episode, an integer code of its (eps_id, agent_id), and its step `t`
        (without a `t` column: the row's place in the file), in the order of the chunks."""
        eps, agents, steps = [], [], []
        for chunk in self._chunks:
            names = pq.read_schema(chunk.path).names
            missing = [n for n in ((c.EPS_ID, c.T) if need_t else (c.EPS_ID,)) if n not in names]
            if missing:
                raise OfflineDataError(f"{chunk.path} has no column {missing[0]!r}: {why}.")
            table = self._read_columns(chunk, (c.EPS_ID, c.AGENT_ID, c.T))
            eps.append(table[c.EPS_ID].cast(pa.string()).to_numpy(zero_copy_only=False))
            if c.AGENT_ID in table.column_names:
                agent = table[c.AGENT_ID].cast(pa.string()).fill_null("")
                agents.append(agent.to_numpy(zero_copy_only=False))
            else:
                agents.append(np.full(table.num_rows, "", object))
            if c.T in table.column_names:
                steps.append(table[c.T].to_numpy().astype(np.int64))
            else:  # file order within each episode
                steps.append(chunk.first_row + np.arange(table.num_rows, dtype=np.int64))
        if not eps:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        eps_codes = np.unique(np.concatenate(eps), return_inverse=True)[1]
        agent_codes = np.unique(np.concatenate(agents), return_inverse=True)[1]
        pairs = eps_codes.astype(np.int64) * (int(agent_codes.max()) + 1) + agent_codes
        return np.unique(pairs, return_inverse=True)[1], np.concatenate(steps)

    # ------------------------------------------------------------------ batches
    def _refill(self) -> None:
        """The next buffer: everything (a dataset that fits, read once), or the next row
        groups in a random order until `shuffle_buffer_size` rows are held."""
        if self.num_rows <= self.shuffle_buffer_size:
            if self._buffer is None:
                self._buffer = SampleBatch.concat_samples(
                    [self._read_chunk(chunk) for chunk in self._chunks]
                )
        else:
            # A buffer never crosses the end of a pass: each pass serves every row once.
            parts, held = [], 0
            if self._next_chunk == 0:
                self._chunk_order = self._rng.permutation(len(self._chunks))
            while held < self.shuffle_buffer_size and (self._next_chunk or not parts):
                chunk = self._chunks[self._chunk_order[self._next_chunk]]
                self._next_chunk = (self._next_chunk + 1) % len(self._chunks)
                parts.append(self._read_chunk(chunk))
                held += chunk.num_rows
            self._buffer = None  # the old buffer is freed before the new one is built
            self._buffer = SampleBatch.concat_samples(parts)
        self._order = self._rng.permutation(len(self._buffer))
        self._cursor = 0

    def reseed(self, seed: int) -> None:
        """Starts a fresh shuffle from `seed` (a restored algorithm's data stream): the same
        seed gives the same batches from here, whatever was read before."""
        self._rng = np.random.default_rng(seed)
        self._order = np.zeros(0, np.int64)
        self._cursor = 0
        self._next_chunk = 0
        if self.num_rows > self.shuffle_buffer_size:
            self._buffer = None

    def sample(self, num_rows: int) -> SampleBatch:
        """`num_rows` transitions, without replacement within a pass over the buffer."""
        parts, needed = [], num_rows
        while needed > 0:
            if self._buffer is None or self._cursor >= len(self._order):
                self._refill()
            take = self._order[self._cursor : self._cursor + needed]
            self._cursor += len(take)
            needed -= len(take)
            parts.append(self._buffer.select_rows(take))
        return parts[0] if len(parts) == 1 else SampleBatch.concat_samples(parts)

    def episode_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's episode (an integer code of its eps_id and agent_id) and step `t`, in
        file order (the order of `all_rows`)."""
        return self._episodes("it is needed to tell the episodes apart", need_t=True)

    def all_rows(self) -> SampleBatch:
        """The whole dataset in file order (for off-policy estimates on data that fits)."""
        return SampleBatch.concat_samples([self._read_chunk(chunk) for chunk in self._chunks])


def discounted_returns(
    episode: np.ndarray, step: np.ndarray, rewards: np.ndarray, gamma: float
) -> np.ndarray:
    """Per row, sum_k gamma^k r_{t+k} over the rest of its episode (rows grouped by the
    integer `episode`, ordered by `step`), in the rows' own order."""
    order = np.lexsort((step, episode))
    sorted_eps, sorted_rewards = episode[order], rewards[order]
    returns = np.zeros(len(order), np.float64)
    running = 0.0
    for i in range(len(order) - 1, -1, -1):
        if i == len(order) - 1 or sorted_eps[i] != sorted_eps[i + 1]:
            running = 0.0
        running = sorted_rewards[i] + gamma * running
        returns[i] = running
    out = np.empty_like(returns)
    out[order] = returns
    return out.astype(np.float32)


class ModuleBatches:
    """What an offline algorithm trains on: one `OfflineData` per module
    (`OfflineData.for_modules`), each batch `{module_id: num_rows rows}`."""

    def __init__(self, data: dict[str, OfflineData]):
        self.data = data

    def sample_batch(self, num_rows: int) -> MultiAgentBatch:
        """`num_rows` rows of every module (what `Algorithm.train_on_batch` takes). Its
        env_steps, which `train_on_batch` adds to `num_env_steps_trained_lifetime`, is
        `num_rows` whatever the number of modules, as an env step gives each module about a
        row: an iteration (`min_train_timesteps_per_iteration`) is the same number of
        updates single- and multi-agent. The agent steps are `num_rows` per module."""
        return MultiAgentBatch(
            {module_id: data.sample(num_rows) for module_id, data in self.data.items()},
            num_rows,
        )

    def reseed(self, seed: int) -> None:
        """Starts every module's shuffle afresh, module i (sorted) from `seed + i`."""
        for index, module_id in enumerate(sorted(self.data)):
            self.data[module_id].reseed(seed + index)
