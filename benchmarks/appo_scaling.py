"""Scaling benchmark: PPO and APPO on CartPole-v1 with 0, 1 and 2 env runners.

    python benchmarks/appo_scaling.py [--algos PPO,APPO] [--runners 0 1 2] [--seeds 1]
        [--peers rllib --peer-python /work/peers-venv/bin/python] [--json out.json]

Every run is a fresh process, so its seconds count from process start (imports and starting
Ray included). Per run: seconds and env steps until the mean return of the last 100 episodes
reaches --target (450); env steps sampled and trained per second of training; and where the
driver's time went, summed from the results' `timers/`: `sample` (with remote runners: the
driver blocked in or receiving samples; `sample_wait` is the part with nothing ready),
`learn`, `sync` (weights to the runners), and the rest (results, metrics, evaluation). APPO
with remote runners learns in a background thread: there `learn` is the thread's seconds,
beside the driver's, and `learner_wait` the driver's seconds handing batches to it and waiting
for its updates.
tunerl runs `experiments/{ppo,appo}_cartpole.yaml` with `num_env_runners` replaced; RLlib
2.60's APPO (--peers rllib) runs its tuned CartPole example with the same runners, in
--peer-python. benchmarks/README.md says how to read the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from _runner import print_result, run_fresh

BENCHMARK_DIR = Path(__file__).resolve().parent
EXPERIMENTS = BENCHMARK_DIR.parent / "experiments"
TIMERS = ("sample", "sample_wait", "learn", "learner_wait", "sync")
# rllib/tuned_examples/appo/cartpole_appo.py (2.60): APPOConfig's defaults plus these.
RLLIB_APPO_TRAINING = {
    "circular_buffer_iterations_per_batch": 2,
    "vf_loss_coeff": 0.05,
    "entropy_coeff": 0.0,
}


# ------------------------------------------------------------------- in the fresh process
def _loop(algo, args, clock, startup_s: float, read) -> dict:
    """`algo.train()` until the target or --max-steps; `read(result)` gives
    (return mean, env steps sampled, env steps trained, timers)."""
    totals = dict.fromkeys(TIMERS, 0.0)
    reached, return_mean, sampled, trained = False, math.nan, 0, 0
    while not reached and sampled < args.max_steps:
        return_mean, sampled, trained, timers = read(algo.train())
        for key in TIMERS:
            totals[key] += float(timers.get(key, 0.0))
        reached = return_mean >= args.target
    end_s = clock()
    train_s = end_s - startup_s
    # sample_wait is a part of sample, not a phase of its own. With APPO's learner thread,
    # `learn` runs beside the driver, whose own phase is learner_wait (handing batches over
    # and waiting for updates).
    driver_phases = ["sample", "sync", "learner_wait" if totals["learner_wait"] else "learn"]
    phases_s = sum(totals[key] for key in driver_phases)
    return {
        "reached": reached,
        "end_s": end_s,
        "startup_s": startup_s,
        "env_steps": sampled,
        "env_steps_trained": trained,
        "return_mean": return_mean,
        "sampled_per_s": sampled / train_s,
        "trained_per_s": trained / train_s,
        "timers_s": {**totals, "other": train_s - phases_s},
    }


def run_tunerl(args: argparse.Namespace, clock) -> dict:
    from tunerl.experiments import load_experiment

    path = EXPERIMENTS / f"{args.algo.lower()}_cartpole.yaml"
    overrides = {"num_env_runners": args.runners}
    if args.learner_queue_size is not None and args.algo == "APPO":
        overrides["learner_queue_size"] = args.learner_queue_size
    config = load_experiment(path).algo_config(seed=args.seed, **overrides)
    algo = config.build_algo()
    startup_s = clock()

    def read(result: dict):
        return (
            float(result["env_runners"]["episode_return_mean"]),
            int(result["num_env_steps_sampled_lifetime"]),
            int(result["num_env_steps_trained_lifetime"]),
            result["timers"],
        )

    try:
        return {**_loop(algo, args, clock, startup_s, read), "settings": str(path)}
    finally:
        algo.stop()


def run_rllib(args: argparse.Namespace, clock) -> dict:
    import logging

    import ray
    from ray.rllib.algorithms.appo import APPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    config = (
        APPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=args.runners)
        .training(**RLLIB_APPO_TRAINING)
        .rl_module(model_config=DefaultModelConfig(vf_share_layers=True))
        .debugging(seed=args.seed)
    )
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    algo = config.build_algo()
    startup_s = clock()

    def read(result: dict):
        runners = result.get("env_runners", {})
        learners = result.get("learners", {}).get("__all_modules__", {})
        timers = result.get("timers", {})
        return (
            float(runners.get("episode_return_mean", math.nan)),
            int(runners.get("num_env_steps_sampled_lifetime", 0)),
            int(learners.get("num_env_steps_trained_lifetime", 0)),
            {
                "sample": timers.get("env_runner_sampling_timer", 0.0),
                "learn": timers.get("learner_update_timer", 0.0),
                "sync": timers.get("synch_weights", 0.0),
            },
        )

    try:
        return {
            **_loop(algo, args, clock, startup_s, read),
            "settings": {**RLLIB_APPO_TRAINING, "vf_share_layers": True},
        }
    finally:
        algo.stop()
        ray.shutdown()


def run_in_this_process(args: argparse.Namespace) -> None:
    clock = lambda: time.time() - args.t0  # noqa: E731
    function = run_rllib if args.tool == "rllib" else run_tunerl
    try:
        result = {"status": "ok", **function(args, clock)}
    except ModuleNotFoundError as error:
        result = {"status": "not installed", "error": str(error)}
    print_result(result)


# -------------------------------------------------------------------------- the parent
def launch(tool: str, algo: str, runners: int, seed: int, args: argparse.Namespace) -> dict:
    """One run in a fresh process (its own session, so a timeout kills Ray's processes)."""
    python = args.peer_python if tool == "rllib" else sys.executable
    command = [python, str(Path(__file__).resolve()), "--tool", tool, "--algo", algo]
    command += ["--runners", str(runners), "--seed", str(seed), "--target", str(args.target)]
    command += ["--max-steps", str(args.max_steps)]
    if args.learner_queue_size is not None:
        command += ["--learner-queue-size", str(args.learner_queue_size)]
    return run_fresh(command, args.timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def row(name: str, result: dict) -> str:
    if result["status"] != "ok":
        return f"{name:<28} {result['status']}"
    t = result["timers_s"]
    to_target = f"{result['end_s']:.1f}" if result["reached"] else "n/r"
    return (
        f"{name:<28} {to_target:>7} {result['env_steps']:>9,} {result['startup_s']:>6.1f} "
        f"{result['sampled_per_s']:>9,.0f} {result['trained_per_s']:>9,.0f}  "
        f"{t['sample']:6.1f} {t['sample_wait']:6.1f} {t['learn']:6.1f} "
        f"{t['learner_wait']:6.1f} {t['sync']:5.1f} "
        f"{t['other']:6.1f}  {result['return_mean']:.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", default="PPO,APPO")
    parser.add_argument("--runners", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--peers", default="", help="'rllib' adds RLlib 2.60's APPO.")
    parser.add_argument("--peer-python", default=None)
    parser.add_argument("--target", type=float, default=450.0)
    parser.add_argument("--max-steps", type=int, default=300_000)
    parser.add_argument("--timeout", type=float, default=1800.0, help="Seconds per run.")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--learner-queue-size",
        type=int,
        default=None,
        help="tunerl APPO's learner_queue_size (0: no learner thread); default: the experiment's.",
    )
    # In the fresh process:
    parser.add_argument("--tool", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--algo", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.t0 is not None:
        args.runners = args.runners[0]
        run_in_this_process(args)
        return
    runs = [("tunerl", a, n) for a in args.algos.split(",") for n in args.runners]
    if "rllib" in args.peers.split(","):
        runs += [("rllib", "APPO", n) for n in args.runners]
    print(
        f"{'run':<28} {'s to ' + format(args.target, 'g'):>7} {'env steps':>9} {'start':>6} "
        f"{'sampled/s':>9} {'trained/s':>9}  {'sample':>6} {'wait':>6} {'learn':>6} "
        f"{'lwait':>6} "
        f"{'sync':>5} {'other':>6}  return"
    )
    records = []
    for tool, algo, runners in runs:
        for seed in args.seeds:
            if tool == "rllib" and not args.peer_python:
                result = {"status": "not installed (no --peer-python)"}
            else:
                result = launch(tool, algo, runners, seed, args)
            name = f"{tool} {algo}, {runners} runners, seed {seed}"
            print(row(name, result), flush=True)
            if result["status"] == "failed":
                print(result["error"], file=sys.stderr)
            records.append({"tool": tool, "algo": algo, "runners": runners, "seed": seed, **result})
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": records}, indent=1))


if __name__ == "__main__":
    main()
