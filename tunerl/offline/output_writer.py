"""Recording what env runners sample as Parquet, one row per env step, with RLlib's column
names (`eps_id`, `agent_id`, `module_id`, `obs`, `actions`, `rewards`, `new_obs`,
`terminateds`, `truncateds`, `t`, `action_logp`, ...). Each file is written to a hidden
temporary name, synced and renamed, so a reader never sees half a file and a writer that
dies loses only the rows it had not written yet (fewer than `output_max_rows_per_file`)."""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tunerl._version import __version__
from tunerl.core import columns as c
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch
from tunerl.core.spaces_json import space_to_json
from tunerl.offline.action_units import module_to_env_units

logger = logging.getLogger(__name__)

# The key of the file metadata tunerl writes (a JSON object; see `file_metadata`).
METADATA_KEY = b"tunerl"
FORMAT_VERSION = 1
# Columns written from a batch, in this order, when it has them (RLlib's row schema; the
# module's extra outputs action_logp, action_dist_inputs, vf_preds as RLlib writes them).
WRITTEN_COLUMNS = (
    c.OBS,
    c.ACTIONS,
    c.REWARDS,
    c.NEW_OBS,
    c.TERMINATEDS,
    c.TRUNCATEDS,
    c.T,
    c.ACTION_LOGP,
    c.ACTION_DIST_INPUTS,
    c.VF_PREDS,
)
PARQUET_SUFFIX = ".parquet"


def env_name(env: Any) -> str | None:
    """The env as a string for the file metadata: a registered id, or a class's path."""
    if env is None or isinstance(env, str):
        return env
    return f"{getattr(env, '__module__', '?')}:{getattr(env, '__qualname__', repr(env))}"


def file_metadata(
    observation_space: gym.Space, action_space: gym.Space, env: str | None
) -> dict[str, Any]:
    """What a reader checks a file against: the spaces (as `tunerl.core.spaces_json`), the
    env, tunerl's version, and that actions are in the env's units."""
    return {
        "format_version": FORMAT_VERSION,
        "tunerl_version": __version__,
        "env": env,
        "observation_space": space_to_json(observation_space),
        "action_space": space_to_json(action_space),
        "actions": "env_units",
    }


def to_arrow(values: np.ndarray) -> pa.Array:
    """A column: one value per row, or a fixed-size list of the row's values (flattened in
    C order; the row's shape is recorded in the metadata's spaces)."""
    values = np.ascontiguousarray(values)
    if values.ndim == 1:
        return pa.array(values)
    width = int(np.prod(values.shape[1:]))
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)


class OutputWriter:
    """Buffers sampled rows and writes a Parquet file into `directory` whenever it holds
    `max_rows_per_file` rows, and the rest at `close()`. Owned by one env runner; file names
    carry the runner's index and a random id, so runners and runs share a folder. A
    multi-agent runner owns one writer per module (`module_id`, also in the file names),
    whose spaces are that module's."""

    def __init__(
        self,
        directory: str | os.PathLike,
        observation_space: gym.Space,
        action_space: gym.Space,
        *,
        env: str | None = None,
        max_rows_per_file: int = 1000,
        compress_columns: list[str] | tuple[str, ...] = (c.OBS, c.NEW_OBS),
        normalize_actions: bool = True,
        worker_index: int = 0,
        module_id: str | None = None,
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.action_space = action_space
        self.max_rows_per_file = max_rows_per_file
        self.compress_columns = set(compress_columns)
        self.normalize_actions = normalize_actions
        self._run_id = uuid.uuid4().hex[:12]
        self._prefix = f"runner{worker_index:03d}-{self._run_id}"
        if module_id is not None:
            # A module id is any string; in a file name only its safe characters.
            self._prefix += "-" + re.sub(r"[^A-Za-z0-9_.-]", "_", module_id)
        self._metadata = {
            METADATA_KEY: json.dumps(file_metadata(observation_space, action_space, env))
        }
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._num_files = 0
        self.num_rows_written = 0

    @classmethod
    def from_config(
        cls,
        config: Any,
        observation_space: gym.Space,
        action_space: gym.Space,
        worker_index: int,
        module_id: str | None = None,
    ) -> OutputWriter | None:
        """The writer `config.offline_data(output=...)` asks for, or None without an output."""
        if config.output is None:
            return None
        return cls(
            config.output,
            observation_space,
            action_space,
            env=env_name(config.env),
            max_rows_per_file=config.output_max_rows_per_file,
            compress_columns=config.output_compress_columns,
            normalize_actions=config.normalize_actions,
            worker_index=worker_index,
            module_id=module_id,
        )

    def write(self, batch: MultiAgentBatch) -> None:
        """Adds every module's rows; writes full files as soon as there are enough rows."""
        for module_id in batch.module_ids():
            rows = batch[module_id]
            if len(rows):
                self._pending.append(self._table(module_id, rows))
                self._pending_rows += len(rows)
        while self._pending_rows >= self.max_rows_per_file:
            table = pa.concat_tables(self._pending)
            self._write_file(table.slice(0, self.max_rows_per_file))
            rest = table.slice(self.max_rows_per_file)
            self._pending, self._pending_rows = ([rest] if len(rest) else []), len(rest)

    def close(self) -> None:
        """Writes the rows not written yet (a file shorter than `max_rows_per_file`)."""
        if self._pending_rows:
            self._write_file(pa.concat_tables(self._pending))
        self._pending, self._pending_rows = [], 0

    def _table(self, module_id: str, rows: SampleBatch) -> pa.Table:
        n = len(rows)
        eps_ids = np.char.add(f"{self._run_id}-", np.asarray(rows[c.EPS_ID]).astype(str))
        # A single-agent runner's rows have no agent id (null, as RLlib's).
        agent_ids = rows[c.AGENT_ID] if c.AGENT_ID in rows else np.full(n, None, object)
        data = {
            c.EPS_ID: pa.array(eps_ids.astype(object), pa.string()),
            c.AGENT_ID: pa.array(agent_ids, pa.string()),
            c.MODULE_ID: pa.array([module_id] * n, pa.string()),
        }
        for name in WRITTEN_COLUMNS:
            if name not in rows:
                continue
            values = np.asarray(rows[name])
            if name == c.ACTIONS:
                values = module_to_env_units(self.action_space, values, self.normalize_actions)
            data[name] = to_arrow(values)
        return pa.table(data)

    def _write_file(self, table: pa.Table) -> None:
        name = f"{self._prefix}-{self._num_files:06d}{PARQUET_SUFFIX}"
        final = self.directory / name
        temporary = self.directory / f".{name}.tmp"
        table = table.replace_schema_metadata(self._metadata)
        compression = {
            name: "zstd" if name in self.compress_columns else "snappy"
            for name in table.column_names
        }
        with open(temporary, "wb") as file:
            pq.write_table(table, file, compression=compression)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
        self._num_files += 1
        self.num_rows_written += len(table)
        logger.debug("Wrote %d rows to %s", len(table), final)
