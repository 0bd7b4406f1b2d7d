"""Seed benchmark: does every experiment in experiments/ reach its target on seeds 0-9?

    python benchmarks/seeds.py [--experiments dqn_cartpole,ppo_cartpole,...] [--seeds 0 1 ...]
        [--parallel 2] [--timeout 900] [--json benchmarks/results_seeds.json]

Each run is one experiment (its config and stop criteria, `seed` replaced) in a fresh
process, trained with `algo.train()` until its stop criteria hold, as `run_experiment` and
`tunerl train` do. A run succeeds if the experiment's target metric reached the target
before the run stopped (the cap on env steps, or the target itself). For each experiment
it prints the successes out of the seeds run and, per seed, the env steps sampled and the
wall seconds from process start (imports included) when the target was reached.

`readme_ppo_cartpole` is not a file in experiments/: it is the README's first command,
`tunerl train --algo PPO --env CartPole-v1 --stop env_runners/episode_return_mean=450`
(PPOConfig's defaults, the CLI's default cap of 100k env steps), run in Python.

`--json` holds one entry per experiment; a run of some experiments replaces those entries
and keeps the others, so the file can be filled one experiment at a time. Wall seconds
depend on the machine's load (`--parallel` runs share its cores); env steps do not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _runner import REPOSITORY, print_result, run_fresh

EXPERIMENTS_DIR = REPOSITORY / "experiments"
DEFAULT_JSON = Path(__file__).resolve().parent / "results_seeds.json"
DEFAULT_SEEDS = list(range(10))
# The order runs are queued in when --experiments is not given: the ones whose defaults are
# in question first.
PRIORITY = (
    "dqn_cartpole",
    "readme_ppo_cartpole",
    "ppo_cartpole",
    "ppo_pendulum",
    "sac_cartpole",
    "sac_pendulum",
    "impala_cartpole",
    "appo_cartpole",
    "appo_pendulum",
)
README_EXPERIMENT = "readme_ppo_cartpole"
# The README's command: `tunerl train --algo PPO --env CartPole-v1 --stop
# env_runners/episode_return_mean=450`, whose cap is the CLI's DEFAULT_TRAIN_STOP.
README_RUN = {
    "algo": "PPO",
    "env": "CartPole-v1",
    "stop": {"env_runners/episode_return_mean": 450.0, "num_env_steps_sampled_lifetime": 100_000},
    "metric": "env_runners/episode_return_mean",
    "target": 450.0,
}
# Ray gives its workers one torch thread, and tunerl's EnvRunner sets one; more intra-op
# threads slow 64-unit networks down on a small, busy machine (as in ppo_cartpole.py).
TORCH_THREADS = "1"


def experiment_names() -> list[str]:
    files = {path.stem for path in EXPERIMENTS_DIR.glob("*.yaml")}
    ordered = [name for name in PRIORITY if name in files or name == README_EXPERIMENT]
    return ordered + sorted(files - set(ordered))


# ------------------------------------------------------------------- in the fresh process
def _config_and_stop(name: str, seed: int):
    """The run's config with `seed`, its stop criteria, its target metric and value."""
    if name == README_EXPERIMENT:
        from tunerl import ALGORITHMS

        config = ALGORITHMS[README_RUN["algo"]].get_default_config().environment(README_RUN["env"])
        config.debugging(seed=seed)
        return config, README_RUN["stop"], README_RUN["metric"], README_RUN["target"]
    from tunerl.experiments import load_experiment

    experiment = load_experiment(EXPERIMENTS_DIR / f"{name}.yaml")
    config = experiment.algo_config(seed=seed)
    return config, experiment.stop, experiment.target_metric, experiment.target_value


def run_one(name: str, seed: int, clock) -> dict:
    """Trains until the stop criteria hold; notes when the target was first reached."""
    from tunerl.experiments import lookup, should_stop

    config, stop, metric, target = _config_and_stop(name, seed)
    algo = config.build_algo()
    startup_s = clock()
    reached_steps, reached_s, best, curve = None, None, -math.inf, []
    try:
        while True:
            result = algo.train()
            value = lookup(result, metric)
            value = math.nan if value is None else float(value)
            best = max(best, value) if value == value else best
            curve.append([int(result["num_env_steps_sampled_lifetime"]), _number(value)])
            if reached_steps is None and value >= target:
                reached_steps = int(result["num_env_steps_sampled_lifetime"])
                reached_s = clock()
            if should_stop(result, stop):
                break
    finally:
        algo.stop()
    return {
        "reached": reached_steps is not None,
        "env_steps_to_target": reached_steps,
        "s_to_target": reached_s,
        "env_steps": int(result["num_env_steps_sampled_lifetime"]),
        "end_s": clock(),
        "startup_s": startup_s,
        "final_value": _number(value),
        "best_value": _number(best),
        "iterations": int(result["training_iteration"]),
        "curve": curve,  # [env steps, target metric] after each iteration
    }


def _number(value: float) -> float | None:
    """`value` rounded for the JSON; None for NaN (no episode finished yet) and -inf."""
    return round(value, 1) if math.isfinite(value) else None


def run_in_this_process(args: argparse.Namespace) -> None:
    def clock() -> float:
        return time.time() - args.t0

    print_result({"status": "ok", **run_one(args.run, args.seed, clock)})


# -------------------------------------------------------------------------- the parent
def _git_commit() -> str:
    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=REPOSITORY, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "tunerl", "experiments")
    return commit + ("+uncommitted changes" if dirty else "")


def launch(name: str, seed: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--run", name, "--seed", str(seed)]
    env = {**os.environ, "OMP_NUM_THREADS": TORCH_THREADS}
    return {"seed": seed, **run_fresh(command, args.timeout, env)}


def _fmt_steps(value) -> str:
    return "n/r" if value is None else f"{value:,d}"


def _fmt_s(value) -> str:
    return "n/r" if value is None else f"{value:.1f}"


def summarize(name: str, runs: list[dict]) -> dict:
    runs = sorted(runs, key=lambda run: run["seed"])
    ok = [run for run in runs if run["status"] == "ok"]
    reached = [run for run in ok if run["reached"]]

    def median(key: str):
        # A run that did not reach the target counts as infinitely slow.
        values = [run[key] if run.get("reached") else math.inf for run in runs]
        middle = statistics.median(values) if values else math.inf
        return None if math.isinf(middle) else middle

    return {
        "experiment": name,
        "seeds": [run["seed"] for run in runs],
        "successes": len(reached),
        "runs_finished": len(ok),
        "median_env_steps_to_target": median("env_steps_to_target"),
        "median_s_to_target": median("s_to_target"),
        "runs": runs,
    }


def print_summary(summary: dict) -> None:
    runs = summary["runs"]
    print(
        f"\n{summary['experiment']}: {summary['successes']}/{len(runs)} reached the target; "
        f"median env steps {_fmt_steps(_int(summary['median_env_steps_to_target']))}, "
        f"median s {_fmt_s(summary['median_s_to_target'])}"
    )
    print(f"  {'seed':>4}  {'env steps to target':>19}  {'s to target':>11}  {'final':>9}  note")
    for run in runs:
        if run["status"] != "ok":
            error = (run.get("error") or "").splitlines()
            note = f"{run['status']}: {error[-1] if error else ''}"
            print(f"  {run['seed']:>4}  {'':>19}  {'':>11}  {'':>9}  {note}")
            continue
        note = "" if run["reached"] else f"not reached in {run['env_steps']:,d} env steps"
        print(
            f"  {run['seed']:>4}  {_fmt_steps(run['env_steps_to_target']):>19}  "
            f"{_fmt_s(run['s_to_target']):>11}  {_fmt_value(run['final_value']):>9}  {note}"
        )


def _fmt_value(value) -> str:
    return "nan" if value is None else f"{value:.1f}"


def _int(value):
    return None if value is None else int(value)


def write_json(path: Path, summaries: dict[str, dict], args: argparse.Namespace) -> None:
    previous = json.loads(path.read_text()) if path.exists() else {}
    experiments = previous.get("experiments", {})
    for name, summary in summaries.items():
        experiments[name] = {**summary, "commit": args.commit, "parallel": args.parallel}
    data = {"benchmark": "benchmarks/seeds.py", "experiments": experiments}
    path.write_text(json.dumps(data, indent=1, default=str, allow_nan=False) + "\n")


def main(args: argparse.Namespace) -> None:
    names = args.experiments.split(",") if args.experiments else experiment_names()
    known = set(experiment_names())
    unknown = [name for name in names if name not in known]
    if unknown:
        sys.exit(f"--experiments: unknown {unknown}; known: {sorted(known)}")
    args.commit = _git_commit()
    print(f"commit {args.commit}; {len(names)} experiments x seeds {args.seeds}", flush=True)
    jobs = [(name, seed) for name in names for seed in args.seeds]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = [(name, pool.submit(launch, name, seed, args)) for name, seed in jobs]
        for name, future in futures:
            run = future.result()
            runs[name].append(run)
            steps = _fmt_steps(run.get("env_steps_to_target"))
            print(f"{name} seed {run['seed']}: {run['status']}, to target: {steps}", flush=True)
            if len(runs[name]) == len(args.seeds):
                summary = summarize(name, runs[name])
                print_summary(summary)
                if args.json:
                    write_json(Path(args.json), {name: summary}, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", help="comma-separated names; default: all")
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS)
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="'' writes none")
    # In the fresh process:
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.run:
        run_in_this_process(arguments)
    else:
        main(arguments)
