"""Peak memory of reading a dataset several times larger than the read buffer: writes
`rows` transitions with `obs_dim` float observations (files of 10,000 rows), then, in a
fresh process each, streams one full pass with shuffle_buffer_size=`buffer` and reads it all
into memory; prints each process's peak RSS and its RSS after the imports (the same
imports in both, so the difference between the two peaks is the data's).

    python benchmarks/offline_read_memory.py /tmp/tunerl-stream 1000000 32 50000
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np


def write(folder: Path, rows: int, obs_dim: int) -> None:
    from tunerl.core import columns as c
    from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch
    from tunerl.offline.output_writer import OutputWriter

    space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    writer = OutputWriter(folder, space, gym.spaces.Discrete(2), max_rows_per_file=10_000)
    rng = np.random.default_rng(0)
    for start in range(0, rows, 10_000):
        n = min(10_000, rows - start)
        batch = SampleBatch(
            {
                c.OBS: rng.normal(size=(n, obs_dim)).astype(np.float32),
                c.ACTIONS: rng.integers(0, 2, n),
                c.REWARDS: np.ones(n, np.float32),
                c.NEW_OBS: rng.normal(size=(n, obs_dim)).astype(np.float32),
                c.TERMINATEDS: np.zeros(n, bool),
                c.TRUNCATEDS: np.zeros(n, bool),
                c.T: np.arange(start, start + n),
                c.EPS_ID: np.full(n, start // 1000),
            }
        )
        writer.write(MultiAgentBatch({c.DEFAULT_MODULE_ID: batch}, n))
    writer.close()


def measure(folder: str, obs_dim: int, buffer: int, whole: bool) -> None:
    from tunerl.offline.offline_data import OfflineData

    space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    baseline = _current_rss_kb()
    data = OfflineData(folder, space, gym.spaces.Discrete(2), shuffle_buffer_size=buffer)
    if whole:
        rows = len(data.all_rows())
    else:
        rows = 0
        while rows < data.num_rows:
            rows += len(data.sample(1000))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mode = "all in memory" if whole else f"streamed, buffer {buffer} rows"
    print(
        f"{mode}: {rows} rows, peak RSS {peak / 1024:.0f} MB "
        f"(after imports: {baseline / 1024:.0f} MB)",
        flush=True,
    )


def _current_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--measure":
        measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "whole")
    else:
        folder, rows, obs_dim, buffer = Path(sys.argv[1]), *map(int, sys.argv[2:5])
        if not folder.exists():
            write(folder, rows, obs_dim)
        size = sum(f.stat().st_size for f in folder.glob("*.parquet")) / 2**20
        print(f"{rows} rows, obs_dim {obs_dim}: {size:.0f} MB of Parquet", flush=True)
        for mode in ("stream", "whole"):
            args = [sys.executable, __file__, "--measure", str(folder), str(obs_dim)]
            subprocess.run([*args, str(buffer), mode], check=True)
