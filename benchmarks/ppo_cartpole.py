"""Speed benchmark: tunerl PPO on CartPole-v1, against Stable-Baselines3, RLlib and a plain loop.

    python benchmarks/ppo_cartpole.py [--seeds 1 2 3] [--peers sb3,rllib,plain]
        [--peer-python /work/peers-venv/bin/python] [--json out.json]

Every run is a fresh process, so its seconds count from process start and include imports:
  - time to target: seconds until the mean return of the last 100 episodes reaches
    --target (450), and the env steps sampled by then; the median over --seeds. A run that
    has sampled --max-steps (300k) without reaching it is "not reached".
  - sampling: env steps per second of tunerl's EnvRunner with 64 envs, and of a bare loop
    stepping Gymnasium's vectorized CartPole with a small torch MLP.
sb3 and rllib run in --peer-python (a separate venv: RLlib pins other versions than tunerl's);
plain PPO (plain_ppo.py) and the bare loop run in this interpreter, as tunerl does.
benchmarks/README.md says how to set up the peers and what each figure means.
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

from _runner import print_result, run_fresh

BENCHMARK_DIR = Path(__file__).resolve().parent
DEFAULT_EXPERIMENT = BENCHMARK_DIR.parent / "experiments" / "ppo_cartpole.yaml"
PEERS = ("sb3", "rllib", "plain")
SAMPLING_NUM_ENVS = 64
SAMPLING_WARMUP_S = 0.5
SAMPLING_S = 2.5
# Ray gives its workers OMP_NUM_THREADS=1 and tunerl's EnvRunner sets one torch thread; on
# a small machine more intra-op threads slow 64-unit networks down (10x on 2 busy cores).
DEFAULT_TORCH_THREADS = 1
VERSION_PACKAGES = ("tunerl", "stable-baselines3", "ray", "torch", "gymnasium", "numpy")


# ------------------------------------------------------------------- in the fresh process
def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _tunerl_config(experiment: str, seed: int):
    """The experiment's PPO config; PPO's defaults if the experiment file does not exist."""
    if Path(experiment).exists():
        from tunerl.experiments import load_experiment

        return load_experiment(experiment).algo_config(seed=seed), experiment
    from tunerl.algorithms.ppo import PPOConfig

    config = PPOConfig().environment("CartPole-v1").update_from_dict({"seed": seed})
    return config, f"PPOConfig defaults ({experiment} not found)"


def run_tunerl(args: argparse.Namespace, clock, smoothing_episodes: int | None = None) -> dict:
    """`smoothing_episodes`: the window of `episode_return_mean`, if not the config's."""
    config, source = _tunerl_config(args.experiment, args.seed)
    if smoothing_episodes is not None:
        config.reporting(metrics_num_episodes_for_smoothing=smoothing_episodes)
    algo = config.build_algo()
    startup_s = clock()
    reached, return_mean, env_steps = False, math.nan, 0
    while not reached and env_steps < args.max_steps:
        result = algo.train()
        return_mean = result["env_runners"].get("episode_return_mean")
        return_mean = math.nan if return_mean is None else float(return_mean)
        env_steps = int(result["num_env_steps_sampled_lifetime"])
        reached = return_mean >= args.target
    end_s = clock()
    algo.stop()
    return {
        "reached": reached,
        "end_s": end_s,
        "startup_s": startup_s,
        "env_steps": env_steps,
        "return_mean": return_mean,
        "settings": {"config": source},
    }


def run_tunerl_sampling(args: argparse.Namespace, clock) -> dict:
    """`EnvRunner.sample()` with 64 envs, one train batch per call, as training calls it."""
    config, source = _tunerl_config(args.experiment, args.seed)
    config.update_from_dict({"num_envs_per_env_runner": SAMPLING_NUM_ENVS, "num_env_runners": 0})
    algo = config.build_algo()
    runner = algo.env_runner_group.local_env_runner
    num_timesteps = config.train_batch_size_per_learner
    startup_s = clock()

    def sample() -> int:
        return len(runner.sample(num_timesteps=num_timesteps))

    steps_per_s = _steps_per_s(sample)
    algo.stop()
    return {
        "steps_per_s": steps_per_s,
        "startup_s": startup_s,
        "settings": {"config": source, "num_timesteps_per_call": num_timesteps},
    }


def run_plain_loop(args: argparse.Namespace, clock) -> dict:
    """The reference for sampling: vectorized CartPole and a 64x64 tanh MLP, nothing else."""
    import gymnasium as gym
    import numpy as np
    import torch
    from torch import nn

    envs = gym.make_vec(
        "CartPole-v1", num_envs=SAMPLING_NUM_ENVS, vectorization_mode="vector_entry_point"
    )
    policy = nn.Sequential(
        nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)
    )
    torch.manual_seed(args.seed)
    obs, _ = envs.reset(seed=args.seed)
    done = np.zeros(SAMPLING_NUM_ENVS, dtype=bool)
    startup_s = clock()

    def sample() -> int:
        nonlocal obs, done
        steps = 0
        for _ in range(32):
            with torch.no_grad():
                logits = policy(torch.as_tensor(obs))
                actions = torch.distributions.Categorical(logits=logits).sample()
            obs, _, terminated, truncated, _ = envs.step(actions.numpy())
            # Count transitions as tunerl does: the step after an episode's end only resets.
            steps += int((~done).sum())
            done = terminated | truncated
        return steps

    return {"steps_per_s": _steps_per_s(sample), "startup_s": startup_s}


def _steps_per_s(sample) -> float:
    """Calls `sample()` (returns env steps) for SAMPLING_WARMUP_S, then for SAMPLING_S."""
    start = time.perf_counter()
    while time.perf_counter() - start < SAMPLING_WARMUP_S:
        sample()
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < SAMPLING_S:
        steps += sample()
    return steps / elapsed


def run_plain(args: argparse.Namespace, clock) -> dict:
    """plain_ppo.py with the experiment's settings, read without importing tunerl."""
    import plain_ppo
    import yaml

    config = {}
    if Path(args.experiment).exists():
        config = yaml.safe_load(Path(args.experiment).read_text()).get("config") or {}
    settings = {k: v for k, v in config.items() if k in plain_ppo.DEFAULTS}
    startup_s = clock()
    result = plain_ppo.train(args.seed, args.target, args.max_steps, **settings)
    ignored = sorted(set(config) - set(settings) - {"seed"})
    return {
        **result,
        "end_s": clock(),
        "startup_s": startup_s,
        "settings": {**plain_ppo.DEFAULTS, **settings, "ignored": ignored},
    }


def run_sb3(args: argparse.Namespace, clock) -> dict:
    import peers

    return peers.run_sb3(args.seed, args.target, args.max_steps, clock)


def run_rllib(args: argparse.Namespace, clock) -> dict:
    import peers

    return peers.run_rllib(args.seed, args.target, args.max_steps, clock, args.rllib_env_runners)


# Run name -> (function, top-level modules whose absence means "not installed").
RUNS = {
    "tunerl": (run_tunerl, ("tunerl", "torch", "gymnasium")),
    "tunerl-sampling": (run_tunerl_sampling, ("tunerl", "torch", "gymnasium")),
    "plain-loop": (run_plain_loop, ("torch", "gymnasium")),
    "plain": (run_plain, ("torch", "gymnasium")),
    "sb3": (run_sb3, ("stable_baselines3", "torch", "gymnasium")),
    # ray[tune] without the rllib extra lacks dm_tree (`tree`), gymnasium, ...
    "rllib": (run_rllib, ("ray", "tree", "gymnasium", "torch", "lz4", "scipy")),
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
    result["versions"] = _versions()
    print_result(result)


# -------------------------------------------------------------------------- the parent
@dataclass
class Benchmark:
    name: str
    run: str
    python: str | None
    kind: str  # "to_target" or "sampling"
    results: list[dict] = field(default_factory=list)
    status: str = "ok"


def launch(benchmark: Benchmark, seed: int, args: argparse.Namespace) -> dict:
    """One run in a fresh process; its clock starts just before the process does."""
    options = {
        "--run": benchmark.run,
        "--seed": seed,
        "--target": args.target,
        "--max-steps": args.max_steps,
        "--experiment": args.experiment,
        "--rllib-env-runners": args.rllib_env_runners,
    }
    command = [benchmark.python, str(Path(__file__).resolve())]
    command += [str(part) for option in options.items() for part in option]
    env = dict(os.environ)
    if args.torch_threads > 0:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    return {**run_fresh(command, args.timeout, env), "seed": seed}


def describe(result: dict) -> str:
    if result["status"] != "ok":
        return result["status"]
    if "steps_per_s" in result:
        return f"{result['steps_per_s']:,.0f} steps/s"
    if not result["reached"]:
        return (
            f"not reached ({result['env_steps']} steps, return "
            f"{result['return_mean']:.1f}, {result['end_s']:.1f} s)"
        )
    return f"{result['end_s']:.1f} s, {result['env_steps']} steps"


def benchmarks_to_run(args: argparse.Namespace) -> list[Benchmark]:
    here = sys.executable
    config = Path(args.experiment).name if Path(args.experiment).exists() else "PPO defaults"
    chosen = [Benchmark(f"tunerl PPO ({config})", "tunerl", here, "to_target")]
    peer_names = {
        "sb3": ("SB3 PPO (zoo tuned)", args.peer_python),
        "rllib": (f"RLlib PPO (tuned example, {args.rllib_env_runners} runners)", args.peer_python),
        "plain": ("plain PPO (plain_ppo.py)", here),
    }
    for peer in args.peers:
        name, python = peer_names[peer]
        chosen.append(Benchmark(name, peer, python, "to_target"))
    chosen.append(
        Benchmark(
            f"tunerl EnvRunner.sample, {SAMPLING_NUM_ENVS} envs",
            "tunerl-sampling",
            here,
            "sampling",
        )
    )
    chosen.append(Benchmark(f"bare loop, {SAMPLING_NUM_ENVS} envs", "plain-loop", here, "sampling"))
    return chosen


def run_all(args: argparse.Namespace) -> list[Benchmark]:
    benchmarks = benchmarks_to_run(args)
    for benchmark in benchmarks:
        if benchmark.python is None:
            benchmark.status = "not installed (no --peer-python)"
            print(f"{benchmark.name}: {benchmark.status}", file=sys.stderr)
            continue
        # Sampling speed does not depend on the seed: one run.
        seeds = args.seeds if benchmark.kind == "to_target" else args.seeds[:1]
        for seed in seeds:
            result = launch(benchmark, seed, args)
            benchmark.results.append(result)
            print(f"{benchmark.name}, seed {seed}: {describe(result)}", file=sys.stderr)
            if result["status"] == "failed":
                print(result["error"], file=sys.stderr)
            if result["status"] == "not installed":
                benchmark.status = f"not installed in {benchmark.python}"
                break
        if any(r["status"] != "ok" for r in benchmark.results) and benchmark.status == "ok":
            benchmark.status = ", ".join(sorted({r["status"] for r in benchmark.results}))
    return benchmarks


def summarize(benchmark: Benchmark) -> dict:
    """Medians over the runs; a run that did not reach the target counts as infinitely slow."""
    runs = [r for r in benchmark.results if r["status"] == "ok"]
    if not runs:
        return {}
    if benchmark.kind == "sampling":
        return {
            "steps_per_s": statistics.median(r["steps_per_s"] for r in runs),
            "startup_s": statistics.median(r["startup_s"] for r in runs),
        }
    return {
        "seconds_median": statistics.median(r["end_s"] if r["reached"] else math.inf for r in runs),
        "env_steps_median": statistics.median(
            r["env_steps"] if r["reached"] else math.inf for r in runs
        ),
        # Training speed: env steps over the seconds after the algorithm was built.
        "steps_per_s": statistics.median(
            r["env_steps"] / (r["end_s"] - r["startup_s"]) for r in runs
        ),
        "startup_s": statistics.median(r["startup_s"] for r in runs),
        "num_reached": sum(r["reached"] for r in runs),
    }


def _or_not_reached(value: float, spec: str) -> str:
    return "not reached" if math.isinf(value) else format(value, spec)


def table(benchmarks: list[Benchmark], args: argparse.Namespace) -> str:
    header = (
        "name",
        f"s to {args.target:g} (median)",
        "per seed (s)",
        "env steps (median)",
        "steps/s",
        "start-up s",
    )
    rows = [header]
    for benchmark in benchmarks:
        summary = summarize(benchmark)
        if not summary:
            rows.append((benchmark.name, benchmark.status, "", "", "", ""))
            continue
        if benchmark.kind == "sampling":
            per_seed, seconds, steps = "", "-", "-"
        else:
            per_seed = " / ".join(
                (f"{r['end_s']:.1f}" if r["reached"] else "n/r")
                if r["status"] == "ok"
                else r["status"]
                for r in benchmark.results
            )
            seconds = _or_not_reached(summary["seconds_median"], ".1f")
            steps = _or_not_reached(summary["env_steps_median"], ",.0f")
        rows.append(
            (
                benchmark.name,
                seconds,
                per_seed,
                steps,
                f"{summary['steps_per_s']:,.0f}",
                f"{summary['startup_s']:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _strict(value):
    """NaN and infinity (not reached) as null, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


def to_json(benchmarks: list[Benchmark], args: argparse.Namespace) -> dict:
    return {
        "target": args.target,
        "max_steps": args.max_steps,
        "seeds": args.seeds,
        "experiment": str(args.experiment),
        "torch_threads": args.torch_threads,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "benchmarks": [
            {
                "name": b.name,
                "run": b.run,
                "kind": b.kind,
                "python": b.python,
                "status": b.status,
                "summary": _strict(summarize(b)),
                "runs": _strict(b.results),
            }
            for b in benchmarks
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See benchmarks/README.md.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"Comma-separated, from {','.join(PEERS)}; '' for none.",
    )
    parser.add_argument(
        "--peer-python",
        default=None,
        help="Interpreter with stable-baselines3 and ray[rllib] (sb3 and rllib "
        "are 'not installed' without it).",
    )
    parser.add_argument("--json", default=None, help="Also write the results here.")
    parser.add_argument(
        "--target",
        type=float,
        default=450.0,
        help="Mean return over the last 100 episodes to reach.",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=300_000,
        help="Env steps after which a run is 'not reached'.",
    )
    parser.add_argument(
        "--experiment",
        default=str(DEFAULT_EXPERIMENT),
        help="tunerl's experiment file (PPO's defaults if it is missing).",
    )
    parser.add_argument(
        "--rllib-env-runners",
        type=int,
        default=2,
        help="RLlib's remote env runners (2: PPOConfig's default, which its tuned example keeps).",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=DEFAULT_TORCH_THREADS,
        help="OMP_NUM_THREADS for every run; 0 leaves each library's default.",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="Seconds per run.")
    # One measurement in this process (how the parent starts its fresh processes).
    parser.add_argument("--run", choices=sorted(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.peers = [p for p in args.peers.split(",") if p]
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"--peers: unknown {sorted(unknown)}; choose from {','.join(PEERS)}.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.run is not None:
        run_in_this_process(args)
        return
    if not Path(args.experiment).exists():
        print(
            f"{args.experiment} not found: tunerl runs with PPOConfig's defaults.", file=sys.stderr
        )
    benchmarks = run_all(args)
    print(table(benchmarks, args))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(benchmarks, args), indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
