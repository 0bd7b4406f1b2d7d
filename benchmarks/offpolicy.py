"""Speed benchmark: tunerl DQN on CartPole-v1 and SAC on Pendulum-v1, against Stable-Baselines3
and RLlib with their own tuned settings.

    python benchmarks/offpolicy.py [--algos dqn,sac] [--seeds 1 2 3] [--peers sb3,rllib]
        [--peer-python /work/peers-venv/bin/python] [--smoothing-dqn 100] [--json out.json]

Every run is a fresh process, so its seconds count from process start and include imports:
  - time to target: seconds until the smoothed training return reaches the target (DQN: 450,
    SAC: -250, each the mean of the last 20 episodes, the smoothing of the experiment, which
    the peers get too; --smoothing-dqn/--smoothing-sac set another), and the env steps
    sampled by then; the median over --seeds. A run that has sampled the cap (DQN 150k, SAC 30k env
    steps) without reaching it is "not reached".
  - per-update cost: one learner update on a replayed batch and one replay-buffer sample,
    each called for 2.5 s after 0.5 s of warm-up, in ms per call.
sb3 and rllib run in --peer-python (offpolicy_peers.py); tunerl in this interpreter. The
peers' windows are taken over the episodes they finished (SB3's ep_info_buffer, RLlib's
episodes recorded by a callback: RLlib 2.60's reported mean covers the last iteration only).
benchmarks/README.md says what each figure means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import ppo_cartpole
from _runner import print_result, run_fresh
from offpolicy_peers import DEFAULT_SMOOTHING_EPISODES, FILL_STEPS, ms_per_call
from ppo_cartpole import DEFAULT_TORCH_THREADS, Benchmark, _strict, summarize

BENCHMARK_DIR = Path(__file__).resolve().parent
EXPERIMENTS_DIR = BENCHMARK_DIR.parent / "experiments"
PEERS = ("sb3", "rllib")
TOOL_NAMES = {"tunerl": "tunerl", "sb3": "SB3 (zoo tuned)", "rllib": "RLlib (tuned example)"}


@dataclass(frozen=True)
class Task:
    algo: str  # as tunerl names it
    env: str
    experiment: Path
    target: float
    max_steps: int


TASKS = {
    "dqn": Task("DQN", "CartPole-v1", EXPERIMENTS_DIR / "dqn_cartpole.yaml", 450.0, 150_000),
    "sac": Task("SAC", "Pendulum-v1", EXPERIMENTS_DIR / "sac_pendulum.yaml", -250.0, 30_000),
}


def smoothing_episodes(experiment: Path) -> int:
    """The experiment's `metrics_num_episodes_for_smoothing` (tunerl's default: 100), read
    without importing tunerl: the window every tool is measured with."""
    import yaml

    config = yaml.safe_load(experiment.read_text()).get("config") or {}
    return int(config.get("metrics_num_episodes_for_smoothing", DEFAULT_SMOOTHING_EPISODES))


# ------------------------------------------------------------------- in the fresh process
def run_tunerl(args: argparse.Namespace, clock) -> dict:
    """ppo_cartpole.py's loop: `algo.train()` until `env_runners/episode_return_mean`,
    smoothed over the task's window."""
    result = ppo_cartpole.run_tunerl(args, clock, smoothing_episodes=args.window)
    result["smoothing_episodes"] = args.window
    result["own_smoothing"] = None  # the window is set in tunerl's config itself
    return result


def run_tunerl_update(args: argparse.Namespace, clock) -> dict:
    """`algo.learner.update()` on one replayed batch, and `algo.replay.sample()`,
    after training iterations that sampled FILL_STEPS env steps (and so began to learn)."""
    from tunerl.experiments import load_experiment

    config = load_experiment(args.experiment).algo_config(seed=args.seed)
    algo = config.build_algo()
    startup_s = clock()
    env_steps = 0
    while env_steps < FILL_STEPS:
        env_steps = int(algo.train()["num_env_steps_sampled_lifetime"])
    batch_size = config.train_batch_size_per_learner
    sample_ms = ms_per_call(lambda: algo.replay.sample(batch_size))
    replay, _ = algo.replay.sample(batch_size)
    update_ms = ms_per_call(lambda: algo.learner.update(replay, env_steps))
    algo.stop()
    return {
        "update_ms": update_ms,
        "sample_ms": sample_ms,
        "batch_size": batch_size,
        "startup_s": startup_s,
        "settings": {"config": str(args.experiment)},
    }


def run_sb3(args: argparse.Namespace, clock) -> dict:
    import offpolicy_peers

    return offpolicy_peers.run_sb3(
        args.algo, args.seed, args.target, args.max_steps, args.window, clock
    )


def run_sb3_update(args: argparse.Namespace, clock) -> dict:
    import offpolicy_peers

    return offpolicy_peers.run_sb3_update(args.algo, args.seed, clock)


def run_rllib(args: argparse.Namespace, clock) -> dict:
    import offpolicy_peers

    return offpolicy_peers.run_rllib(
        args.algo, args.seed, args.target, args.max_steps, args.window, clock
    )


def run_rllib_update(args: argparse.Namespace, clock) -> dict:
    import offpolicy_peers

    return offpolicy_peers.run_rllib_update(args.algo, args.seed, clock)


TUNERL_MODULES = ("tunerl", "torch", "gymnasium")
SB3_MODULES = ("stable_baselines3", "torch", "gymnasium")
# ray[tune] without the rllib extra lacks dm_tree (`tree`), gymnasium, ...
RLLIB_MODULES = ("ray", "tree", "gymnasium", "torch", "lz4", "scipy")
# Run name -> (function, top-level modules whose absence means "not installed").
RUNS = {
    "tunerl": (run_tunerl, TUNERL_MODULES),
    "tunerl-update": (run_tunerl_update, TUNERL_MODULES),
    "sb3": (run_sb3, SB3_MODULES),
    "sb3-update": (run_sb3_update, SB3_MODULES),
    "rllib": (run_rllib, RLLIB_MODULES),
    "rllib-update": (run_rllib_update, RLLIB_MODULES),
}


def run_in_this_process(args: argparse.Namespace) -> None:
    """Runs one measurement and prints its result as one JSON line for the parent."""

    def clock() -> float:
        return time.time() - args.t0

    function, modules = RUNS[args.run]
    try:
        result = {"status": "ok", **function(args, clock)}
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] not in modules:
            raise
        result = {"status": "not installed", "error": str(error)}
    result["versions"] = ppo_cartpole._versions()
    print_result(result)


# -------------------------------------------------------------------------- the parent
@dataclass
class Row:
    """One tool on one task: its time-to-target runs and its per-update run."""

    algo: str
    tool: str
    python: str | None
    smoothing: int  # episodes
    target: float
    max_steps: int
    to_target: Benchmark
    update: dict = field(default_factory=dict)


def launch(run: str, python: str, seed: int, row: Row, args: argparse.Namespace) -> dict:
    """One run in a fresh process; its clock starts just before the process does."""
    options = {
        "--run": run,
        "--algo": row.algo,
        "--seed": seed,
        "--target": row.target,
        "--max-steps": row.max_steps,
        "--window": row.smoothing,
        "--experiment": TASKS[row.algo].experiment,
    }
    command = [python, str(Path(__file__).resolve())]
    command += [str(part) for option in options.items() for part in option]
    env = dict(os.environ)
    if args.torch_threads > 0:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    return {**run_fresh(command, args.timeout, env), "seed": seed}


def describe(result: dict) -> str:
    if result["status"] == "ok" and "update_ms" in result:
        return f"{result['update_ms']:.2f} ms/update, {result['sample_ms']:.3f} ms/sample"
    text = ppo_cartpole.describe(result)
    own = result.get("own_smoothing")
    if own:
        text += f"; own smoothing ({_own_label(own)}): {_describe_own(own)}"
    return text


def _own_label(own: dict) -> str:
    """RLlib's own figure is its reported mean (nominally over `window` episodes)."""
    if own.get("metric"):
        return f"reported, nominally {own['window']} ep"
    return f"{own['window']} ep"


def _describe_own(own: dict) -> str:
    if own["reached"]:
        return f"{own['end_s']:.1f} s, {own['env_steps']} steps"
    return f"not by the stop (return {_format_return(own['return_mean'])})"


def _format_return(value: float | None) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.1f}"


def rows_to_run(args: argparse.Namespace) -> list[Row]:
    rows = []
    for algo in args.algos:
        task = TASKS[algo]
        target = args.target_dqn if algo == "dqn" else args.target_sac
        max_steps = args.max_steps_dqn if algo == "dqn" else args.max_steps_sac
        smoothing = getattr(args, f"smoothing_{algo}") or smoothing_episodes(task.experiment)
        for tool in ("tunerl", *args.peers):
            python = sys.executable if tool == "tunerl" else args.peer_python
            name = f"{TOOL_NAMES[tool]} {task.algo} {task.env}"
            rows.append(
                Row(
                    algo=algo,
                    tool=tool,
                    python=python,
                    smoothing=smoothing,
                    target=target,
                    max_steps=max_steps,
                    to_target=Benchmark(name, tool, python, "to_target"),
                )
            )
    return rows


def run_all(args: argparse.Namespace) -> list[Row]:
    rows = rows_to_run(args)
    for row in rows:
        benchmark = row.to_target
        if row.python is None:
            benchmark.status = "not installed (no --peer-python)"
            print(f"{benchmark.name}: {benchmark.status}", file=sys.stderr)
            continue
        for seed in args.seeds:
            result = launch(row.tool, row.python, seed, row, args)
            benchmark.results.append(result)
            print(f"{benchmark.name}, seed {seed}: {describe(result)}", file=sys.stderr)
            if result["status"] == "failed":
                print(result["error"], file=sys.stderr)
            if result["status"] == "not installed":
                benchmark.status = f"not installed in {row.python}"
                break
        if any(r["status"] != "ok" for r in benchmark.results) and benchmark.status == "ok":
            benchmark.status = ", ".join(sorted({r["status"] for r in benchmark.results}))
        if benchmark.status.startswith("not installed"):
            continue
        # The cost of an update does not depend on the seed: one run.
        row.update = launch(f"{row.tool}-update", row.python, args.seeds[0], row, args)
        print(f"{benchmark.name}, per update: {describe(row.update)}", file=sys.stderr)
        if row.update["status"] == "failed":
            print(row.update["error"], file=sys.stderr)
    return rows


def summarize_own(row: Row) -> dict | None:
    """Medians over the runs for the tool's own smoothing, when it is not the task's."""
    owns = [r["own_smoothing"] for r in row.to_target.results if r.get("own_smoothing")]
    if not owns:
        return None
    return {
        "label": _own_label(owns[0]),
        "seconds_median": statistics.median(o["end_s"] if o["reached"] else math.inf for o in owns),
        "env_steps_median": statistics.median(
            o["env_steps"] if o["reached"] else math.inf for o in owns
        ),
        "num_reached": sum(o["reached"] for o in owns),
    }


def _not_reached(value: float, spec: str) -> str:
    return "n/r" if math.isinf(value) else format(value, spec)


def _row_cells(row: Row) -> tuple[str, ...]:
    benchmark, update = row.to_target, row.update
    summary = summarize(benchmark)
    if update.get("status") == "ok":
        update_cells = (
            f"{update['update_ms']:.2f}",
            f"{update['sample_ms']:.3f}",
            str(update["batch_size"]),
        )
    else:
        update_cells = (update.get("status", "-"), "", "")
    if not summary:
        return (TOOL_NAMES[row.tool], benchmark.status, "", "", "", "", "", *update_cells)
    per_seed = " / ".join(
        (f"{r['end_s']:.1f}" if r["reached"] else "n/r") if r["status"] == "ok" else r["status"]
        for r in benchmark.results
    )
    own = summarize_own(row)
    own_cell = "same"
    if own is not None:
        own_cell = (
            f"{own['label']}: {_not_reached(own['seconds_median'], '.1f')} s, "
            f"{_not_reached(own['env_steps_median'], ',.0f')} steps"
        )
    return (
        TOOL_NAMES[row.tool],
        _not_reached(summary["seconds_median"], ".1f"),
        per_seed,
        _not_reached(summary["env_steps_median"], ",.0f"),
        f"{summary['steps_per_s']:,.0f}",
        f"{summary['startup_s']:.1f}",
        own_cell,
        *update_cells,
    )


def table(rows: list[Row], args: argparse.Namespace) -> str:
    sections = []
    for algo in args.algos:
        task_rows = [row for row in rows if row.algo == algo]
        first = task_rows[0]
        task = TASKS[algo]
        title = (
            f"{task.algo} {task.env}: seconds until the mean return of the last "
            f"{first.smoothing} episodes reaches {first.target:g} "
            f"(cap {first.max_steps:,} env steps)"
        )
        header = (
            "tool",
            "s (median)",
            "per seed (s)",
            "env steps (median)",
            "steps/s",
            "start-up s",
            "own smoothing (median)",
            "ms/update",
            "ms/sample",
            "batch",
        )
        cells = [header, *(_row_cells(row) for row in task_rows)]
        widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
            for line in cells
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        sections.append("\n".join([title, *lines]))
    return "\n\n".join(sections)


def to_json(rows: list[Row], args: argparse.Namespace) -> dict:
    return {
        "seeds": args.seeds,
        "torch_threads": args.torch_threads,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "tasks": [
            {
                "algo": row.algo,
                "tool": row.tool,
                "name": row.to_target.name,
                "python": row.python,
                "status": row.to_target.status,
                "target": row.target,
                "max_steps": row.max_steps,
                "smoothing_episodes": row.smoothing,
                "summary": _strict(summarize(row.to_target)),
                "own_smoothing_summary": _strict(summarize_own(row)),
                "runs": _strict(row.to_target.results),
                "update": _strict(row.update),
            }
            for row in rows
        ],
    }


def _names(value: str, allowed: tuple[str, ...], option: str, parser) -> list[str]:
    names = [name for name in value.split(",") if name]
    unknown = set(names) - set(allowed)
    if unknown:
        parser.error(f"{option}: unknown {sorted(unknown)}; choose from {','.join(allowed)}.")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See benchmarks/README.md.",
    )
    parser.add_argument("--algos", default=",".join(TASKS), help="Comma-separated: dqn,sac.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"Comma-separated, from {','.join(PEERS)}."
    )
    parser.add_argument(
        "--peer-python",
        default=None,
        help="Interpreter with stable-baselines3 and ray[rllib] (sb3 and rllib "
        "are 'not installed' without it).",
    )
    parser.add_argument("--json", default=None, help="Also write the results here.")
    for algo, task in TASKS.items():
        parser.add_argument(
            f"--target-{algo}",
            type=float,
            default=task.target,
            help=f"{task.algo}: smoothed training return to reach ({task.target:g}).",
        )
        parser.add_argument(
            f"--smoothing-{algo}",
            type=int,
            default=None,
            help=f"{task.algo}: episodes the return is smoothed over, for every tool (default: "
            f"the experiment's, {task.experiment.name}).",
        )
        parser.add_argument(
            f"--max-steps-{algo}",
            type=int,
            default=task.max_steps,
            help=f"{task.algo}: env steps after which a run is 'not reached' ({task.max_steps:,}).",
        )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=DEFAULT_TORCH_THREADS,
        help="OMP_NUM_THREADS for every run; 0 leaves each library's default.",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="Seconds per run.")
    # One measurement in this process (how the parent starts its fresh processes).
    parser.add_argument("--run", choices=sorted(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--algo", choices=sorted(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--max-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--experiment", help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.algos = _names(args.algos, tuple(TASKS), "--algos", parser)
    args.peers = _names(args.peers, PEERS, "--peers", parser)
    if args.run is None:
        if not args.algos:
            parser.error("--algos: choose at least one of dqn,sac.")
        for algo in args.algos:
            if not TASKS[algo].experiment.exists():
                parser.error(f"{TASKS[algo].experiment} not found.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.run is not None:
        run_in_this_process(args)
        return
    rows = run_all(args)
    print(table(rows, args))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(rows, args), indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
