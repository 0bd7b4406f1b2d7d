"""What every benchmark script shares: one run in a fresh process, whose seconds count from
that process's start, and its result read back from the line it prints."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

RESULT_MARK = "BENCHMARK_RESULT "
REPOSITORY = Path(__file__).resolve().parent.parent


def print_result(result: dict) -> None:
    """In the fresh process: the result, on the line `run_fresh` reads."""
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)


def run_fresh(command: list[str], timeout_s: float, env: dict[str, str] | None = None) -> dict:
    """Runs `command` with `--t0 <now>` appended, from the repository root, in its own session;
    returns the last result it printed, or `{"status": "timeout" | "failed", "error": ...}`.
    A timeout kills the whole session: Ray's processes too."""
    process = subprocess.Popen(
        [*command, "--t0", repr(time.time())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPOSITORY,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.communicate()
        return {"status": "timeout", "error": f"over {timeout_s} s"}
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    if process.returncode != 0 or not lines:
        tail = "\n".join(stderr.strip().splitlines()[-20:])
        return {"status": "failed", "returncode": process.returncode, "error": tail}
    return json.loads(lines[-1][len(RESULT_MARK) :])
