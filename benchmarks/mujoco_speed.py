"""Speed at real sizes: SAC on Hopper-v5 and HalfCheetah-v5 and PPO on HalfCheetah-v5 with
256x256 networks, tunerl against Stable-Baselines3 and RLlib at the same settings.

    python benchmarks/mujoco_speed.py [--tasks sac_hopper,sac_halfcheetah,ppo_halfcheetah]
        [--seeds 1 2 3] [--peers sb3,rllib] [--peer-python /work/peers-venv/bin/python]
        [--budget-sac 10000] [--budget-ppo 50000] [--threads 1 2] [--json out.json]

One fresh process per run (seconds count from its start, imports included), one torch thread
unless --threads says more (tunerl's num_cpus_for_main_process; the peers get
OMP_NUM_THREADS). Per run: wall seconds and the mean return of the last 10 episodes at a
quarter, half and all of the env-step budget, ms per env step over the training, and after
training the learner's cost: SAC ms per update on one replayed batch (and its GFLOP/s against a
plain torch.mm loop measured in the same process), PPO ms per SGD step. tunerl's settings are
experiments/mujoco/*.yaml; the peers' the same (mujoco_speed_peers.py). benchmarks/README.md says
what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mujoco_speed_peers
import ppo_cartpole
from _runner import print_result, run_fresh
from mujoco_speed_peers import Curve, mm_peak_gflops, sac_update_flops
from offpolicy_peers import ms_per_call

BENCHMARK_DIR = Path(__file__).resolve().parent
EXPERIMENTS_DIR = BENCHMARK_DIR.parent / "experiments" / "mujoco"
PEERS = ("sb3", "rllib")
TOOL_NAMES = {"tunerl": "tunerl", "sb3": "SB3 2.9", "rllib": "RLlib 2.60"}


@dataclass(frozen=True)
class Task:
    algo: str  # "sac" or "ppo"
    env: str
    experiment: Path


TASKS = {
    "sac_hopper": Task("sac", "Hopper-v5", EXPERIMENTS_DIR / "sac_hopper.yaml"),
    "sac_halfcheetah": Task("sac", "HalfCheetah-v5", EXPERIMENTS_DIR / "sac_halfcheetah.yaml"),
    "ppo_halfcheetah": Task("ppo", "HalfCheetah-v5", EXPERIMENTS_DIR / "ppo_halfcheetah.yaml"),
}


def budgets(total: int) -> list[int]:
    return [total // 4, total // 2, total]


# ------------------------------------------------------------------- in the fresh process
def run_tunerl(args: argparse.Namespace, clock) -> dict:
    """`algo.train()` until the budget; the smoothed return (10 episodes, the experiment's
    window) at the first iteration past each budget point."""
    from tunerl.experiments import load_experiment

    task = TASKS[args.task]
    config = load_experiment(task.experiment).algo_config(seed=args.seed)
    config.update_from_dict({"num_cpus_for_main_process": args.threads})
    algo = config.build_algo()
    startup_s = clock()
    curve = Curve(budgets(args.budget), clock)
    learn_s, iterations, done = 0.0, 0, False
    while not done:
        result = algo.train()
        env_steps = int(result["num_env_steps_sampled_lifetime"])
        learn_s += result["timers"].get("learn", 0.0)
        iterations += 1
        done = curve.check(env_steps, result["env_runners"].get("episode_return_mean"))
    if task.algo == "sac":
        update = _tunerl_sac_update(algo, config, env_steps)
    else:
        minibatches = config.train_batch_size_per_learner // config.minibatch_size
        update = {"sgd_step_ms": learn_s * 1e3 / (iterations * config.num_epochs * minibatches)}
    algo.stop()
    settings = {"config": str(task.experiment), "num_cpus_for_main_process": args.threads}
    return mujoco_speed_peers.run_result(curve, startup_s, clock, settings, update)


def _tunerl_sac_update(algo, config, env_steps: int) -> dict:
    """`algo.learner.update()` on one replayed batch (the target update inside)."""
    replay, _ = algo.replay.sample(config.train_batch_size_per_learner)
    peak = mm_peak_gflops()
    ms = ms_per_call(lambda: algo.learner.update(replay, env_steps))
    return {"update_ms": ms, "mm_peak_gflops": peak}


def run_peer(args: argparse.Namespace, clock) -> dict:
    task = TASKS[args.task]
    run = mujoco_speed_peers.run_sb3 if args.run == "sb3" else mujoco_speed_peers.run_rllib
    return run(task.algo, task.env, args.seed, budgets(args.budget), clock)


RUNS = {
    "tunerl": (run_tunerl, ("tunerl", "torch", "gymnasium", "mujoco")),
    "sb3": (run_peer, ("stable_baselines3", "torch", "gymnasium", "mujoco")),
    "rllib": (run_peer, ("ray", "tree", "gymnasium", "torch", "lz4", "scipy", "mujoco")),
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
def _obs_and_action_dims(env_id: str) -> tuple[int, int]:
    import gymnasium as gym

    env = gym.make(env_id)
    dims = int(env.observation_space.shape[0]), int(env.action_space.shape[0])
    env.close()
    return dims


def launch(tool: str, task: str, seed: int, threads: int, args) -> dict:
    python = sys.executable if tool == "tunerl" else args.peer_python
    budget = args.budget_sac if TASKS[task].algo == "sac" else args.budget_ppo
    command = [python, str(Path(__file__).resolve()), "--run", tool, "--task", task]
    command += ["--seed", str(seed), "--budget", str(budget), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = run_fresh(command, args.timeout, env)
    return {**result, "tool": tool, "task": task, "seed": seed, "threads": threads}


def describe(result: dict) -> str:
    if result["status"] != "ok":
        return f"{result['status']}: {result.get('error', '')[-300:]}"
    points = ", ".join(
        f"{p['env_steps']}: {p['seconds']:.0f} s, {_fmt(p['return_mean'], '.0f')}"
        for p in result["points"]
    )
    cost = (
        f"{result['update_ms']:.2f} ms/update"
        if "update_ms" in result
        else f"{result.get('sgd_step_ms', float('nan')):.2f} ms/SGD step"
    )
    return f"{points}; {result['ms_per_env_step']:.2f} ms/env step; {cost}"


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run_all(args: argparse.Namespace) -> list[dict]:
    results = []
    for task in args.tasks:
        for tool in ("tunerl", *args.peers):
            if tool != "tunerl" and args.peer_python is None:
                print(f"{tool} {task}: not installed (no --peer-python)", file=sys.stderr)
                continue
            seeds = args.seeds if tool != "rllib" else args.seeds[: args.rllib_seeds]
            for threads in args.threads if tool == "tunerl" else args.threads[:1]:
                for seed in seeds:
                    result = launch(tool, task, seed, threads, args)
                    results.append(result)
                    label = f"{TOOL_NAMES[tool]} {task} seed {seed}, {threads} thread(s)"
                    print(f"{label}: {describe(result)} [load {_load()}]", file=sys.stderr)
                    if result["status"] == "not installed":
                        break
    return results


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def summarize(results: list[dict], args: argparse.Namespace) -> list[dict]:
    """Per task, tool and thread count: medians over the seeds."""
    rows = []
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if r["status"] == "ok":
            groups.setdefault((r["task"], r["tool"], r["threads"]), []).append(r)
    for (task, tool, threads), runs in groups.items():
        row = {"task": task, "tool": tool, "threads": threads, "seeds": [r["seed"] for r in runs]}
        for i, point in enumerate(runs[0]["points"]):
            steps = point["env_steps"]
            row[f"s_{steps}"] = statistics.median(r["points"][i]["seconds"] for r in runs)
            returns = [r["points"][i]["return_mean"] for r in runs]
            returns = [x for x in returns if x is not None]
            row[f"return_{steps}"] = statistics.median(returns) if returns else None
            row[f"returns_{steps}"] = returns
        row["ms_per_env_step"] = statistics.median(r["ms_per_env_step"] for r in runs)
        row["startup_s"] = statistics.median(r["startup_s"] for r in runs)
        for key in ("update_ms", "mm_peak_gflops", "sgd_step_ms"):
            values = [r[key] for r in runs if r.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        if row["update_ms"] is not None:
            obs_dim, action_dim = _obs_and_action_dims(TASKS[task].env)
            flops = sac_update_flops(obs_dim, action_dim, [256, 256], 256)
            row["update_gflop"] = flops / 1e9
            row["gflops"] = flops / (row["update_ms"] * 1e6)
            row["fraction_of_mm_peak"] = row["gflops"] / row["mm_peak_gflops"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    sections = []
    for task in dict.fromkeys(row["task"] for row in rows):
        task_rows = [row for row in rows if row["task"] == task]
        steps = [int(k[2:]) for k in task_rows[0] if k.startswith("s_")]
        header = ["tool", "thr", *(f"s@{s}" for s in steps), *(f"ret@{s}" for s in steps)]
        header += ["ms/step", "start s", "ms/update", "GFLOP/s", "of mm peak", "ms/SGD"]
        lines = [header]
        for row in task_rows:
            lines.append(
                [
                    TOOL_NAMES[row["tool"]],
                    str(row["threads"]),
                    *(_fmt(row[f"s_{s}"], ".0f") for s in steps),
                    *(_fmt(row[f"return_{s}"], ".0f") for s in steps),
                    f"{row['ms_per_env_step']:.2f}",
                    f"{row['startup_s']:.1f}",
                    _fmt(row["update_ms"], ".2f"),
                    _fmt(row.get("gflops"), ".0f"),
                    _fmt(row.get("fraction_of_mm_peak"), ".0%"),
                    _fmt(row["sgd_step_ms"], ".2f"),
                ]
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        title = f"{task} ({TASKS[task].env}; median over seeds; ret = mean of last 10 episodes)"
        sections.append("\n".join([title, *text]))
    return "\n\n".join(sections)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See benchmarks/README.md.",
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"From {','.join(TASKS)}.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rllib-seeds", type=int, default=3, help="RLlib runs the first N.")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"From {','.join(PEERS)}.")
    parser.add_argument("--peer-python", default=None, help="Interpreter with the peers.")
    parser.add_argument("--budget-sac", type=int, default=10_000, help="SAC env steps.")
    parser.add_argument("--budget-ppo", type=int, default=50_000, help="PPO env steps.")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1],
        help="Torch threads; tunerl runs each (num_cpus_for_main_process), the peers the first.",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="Seconds per run.")
    parser.add_argument("--json", default=None, help="Also write the results here.")
    # One measurement in this process (how the parent starts its fresh processes).
    parser.add_argument("--run", choices=sorted(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=sorted(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.peers = [p for p in args.peers.split(",") if p]
    for name, allowed in ((args.tasks, TASKS), (args.peers, PEERS)):
        unknown = sorted(set(name) - set(allowed))
        if unknown:
            parser.error(f"unknown {unknown}; choose from {','.join(allowed)}.")
    if args.run is not None:
        args.threads = args.threads[0]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.run is not None:
        run_in_this_process(args)
        return
    results = run_all(args)
    rows = summarize(results, args)
    print(table(rows))
    if args.json:
        data = {
            "seeds": args.seeds,
            "budgets": {"sac": args.budget_sac, "ppo": args.budget_ppo},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "summary": rows,
            "runs": results,
        }
        Path(args.json).write_text(json.dumps(ppo_cartpole._strict(data), indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
