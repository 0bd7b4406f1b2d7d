"""Multi-agent benchmark: tunerl's MultiAgentCartPole beside RLlib 2.60's in the same run, and
tunerl's simple_spread curves (shared-policy PPO and MAPPO).

    python benchmarks/multi_agent.py cartpole [--seeds 0 1 2] [--rllib-timeout 1200]
        [--peer-python /work/peers-venv/bin/python] [--no-rllib | --no-tunerl] [--json out.json]
    python benchmarks/multi_agent.py spread [--experiments ppo_simple_spread mappo_simple_spread]
        [--timeout 1500] [--json out.json]

Every run is a fresh process; its seconds count from process start and include imports.
- cartpole: experiments/multi_agent/ppo_multi_agent_cartpole.yaml with each seed; seconds
  and env steps until the combined return (sum over both agents, last 100 episodes) reaches
  its target (600), or the budget (100k env steps) without it. RLlib runs its own example's
  setup (PPO defaults, policies p0/p1, 2 runners x 20 envs) in --peer-python until 600,
  100k env steps or --rllib-timeout.
- spread: each experiment until its env-step budget or --timeout; the curve (env steps,
  return, seconds) of every iteration.
The load average before and after each run is printed with it: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from _runner import print_result, run_fresh

REPOSITORY = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPOSITORY / "experiments"
CARTPOLE_EXPERIMENT = EXPERIMENTS / "multi_agent" / "ppo_multi_agent_cartpole.yaml"
SPREAD_EXPERIMENTS = ("ppo_simple_spread", "mappo_simple_spread")
CARTPOLE_TARGET = 600.0
CARTPOLE_MAX_STEPS = 100_000


# ------------------------------------------------------------------- in the fresh process
def _clock(t0: float):
    return lambda: round(time.time() - t0, 2)


def _write_progress(path: str | None, curve: list) -> None:
    """The curve so far, for the driver to read if this process is killed at its timeout."""
    if path:
        Path(path).write_text(json.dumps(curve))


def run_tunerl(
    experiment_path: Path,
    seed: int | None,
    clock,
    until_target: bool,
    max_s: float,
    progress: str | None = None,
) -> dict:
    from tunerl.experiments import load_experiment, lookup, reached_stop_keys

    experiment = load_experiment(experiment_path)
    config = experiment.algo_config(**({} if seed is None else {"seed": seed}))
    stop = {**experiment.stop, **(experiment.target_stop if until_target else {})}
    algo = config.build_algo()
    startup_s = clock()
    curve = []
    try:
        while True:
            result = algo.train()
            value = lookup(result, experiment.target_metric)
            steps = result["num_env_steps_sampled_lifetime"]
            curve.append([steps, None if value is None else round(float(value), 2), clock()])
            _write_progress(progress, curve)
            # Stop before the driver's timeout kills the process, so the curve is printed.
            if reached_stop_keys(result, stop) or clock() > max_s:
                break
    finally:
        algo.stop()
    values = [point[1] for point in curve if point[1] is not None]
    return {
        "experiment": experiment.name,
        "seed": config.seed,
        "reached": bool(values) and values[-1] >= experiment.target_value,
        "target": experiment.target_value,
        "return_mean": values[-1] if values else math.nan,
        "best_return_mean": max(values) if values else math.nan,
        "env_steps": curve[-1][0],
        "startup_s": startup_s,
        "end_s": clock(),
        # CPU seconds of this process (tunerl samples and learns in it with
        # num_env_runners=0): what the run costs with the machine's other load taken out.
        "cpu_s": round(time.process_time(), 2),
        "curve": curve,
    }


def run_rllib_cartpole(seed: int, clock, timeout_s: float, progress: str | None = None) -> dict:
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.examples.envs.classes.multi_agent import MultiAgentCartPole
    from ray.tune.registry import register_env

    register_env("multi_agent_cartpole", lambda config: MultiAgentCartPole(config))
    config = (
        PPOConfig()
        .environment("multi_agent_cartpole", env_config={"num_agents": 2})
        .env_runners(num_env_runners=2, num_envs_per_env_runner=20)
        .multi_agent(
            policies={"p0", "p1"},
            policy_mapping_fn=lambda agent_id, episode, **kwargs: f"p{agent_id}",
        )
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={"p0": RLModuleSpec(), "p1": RLModuleSpec()}
            )
        )
        .debugging(seed=seed)
    )
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    algo = config.build_algo()
    startup_s = clock()
    curve = []
    reached, return_mean, env_steps = False, math.nan, 0
    while not reached and env_steps < CARTPOLE_MAX_STEPS:
        # Stop before the outer timeout kills the process, so the curve so far is printed.
        if clock() > timeout_s:
            break
        result = algo.train()
        runners = result.get("env_runners", {})
        return_mean = float(runners.get("episode_return_mean", math.nan))
        env_steps = int(
            runners.get("num_env_steps_sampled_lifetime")
            or result.get("num_env_steps_sampled_lifetime", 0)
        )
        curve.append([env_steps, round(return_mean, 2), clock()])
        _write_progress(progress, curve)
        reached = return_mean >= CARTPOLE_TARGET  # False while the mean is nan (no episode)
    algo.stop()
    ray.shutdown()
    return {
        "reached": reached,
        "seed": seed,
        "return_mean": return_mean,
        "env_steps": env_steps,
        "startup_s": startup_s,
        "end_s": clock(),
        "curve": curve,
        "settings": "RLlib example multi_agent_cartpole: PPO defaults, 2 runners x 20 envs",
    }


def _in_fresh_process(args: argparse.Namespace) -> None:
    clock = _clock(args.t0)
    if args.run == "tunerl":
        until_target = args.experiment == str(CARTPOLE_EXPERIMENT)
        max_s = args.timeout - 60
        result = run_tunerl(
            Path(args.experiment), args.seed, clock, until_target, max_s, args.progress
        )
    else:
        result = run_rllib_cartpole(args.seed, clock, args.rllib_timeout - 60, args.progress)
    print_result(result)


# ------------------------------------------------------------------------ the driver
def _fresh(command: list[str], timeout_s: float, env: dict | None = None) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        progress = Path(folder) / "curve.json"
        result = run_fresh([*command, "--progress", str(progress)], timeout_s, env)
        if "curve" not in result and progress.exists():
            # Killed at the timeout: the curve up to its last finished iteration.
            result["curve"] = json.loads(progress.read_text())
    result["loadavg_before"] = [round(x, 2) for x in load_before]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _summary(name: str, result: dict) -> str:
    if "env_steps" not in result:
        last = result.get("curve", [])[-1:] or "no iteration finished"
        return f"{name}: {result.get('status')} {result.get('error', '')[-300:]}; last {last}"
    return (
        f"{name}: reached={result['reached']} return {result['return_mean']:.1f} "
        f"(best {result.get('best_return_mean', result['return_mean']):.1f}) at "
        f"{result['env_steps']} env steps, {result['end_s']} s (startup {result['startup_s']} s)"
        f", cpu {result.get('cpu_s', '-')} s; load {result['loadavg_before']} -> "
        f"{result['loadavg_after']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("cartpole", "spread"), nargs="?")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiments", nargs="+", default=list(SPREAD_EXPERIMENTS))
    parser.add_argument("--timeout", type=float, default=1500.0)
    parser.add_argument("--rllib-timeout", type=float, default=1200.0)
    parser.add_argument("--peer-python", default="/work/peers-venv/bin/python")
    parser.add_argument("--no-rllib", action="store_true")
    parser.add_argument("--no-tunerl", action="store_true", help="cartpole: RLlib only")
    parser.add_argument("--json")
    # In the fresh process.
    parser.add_argument("--run", choices=("tunerl", "rllib"))
    parser.add_argument("--experiment")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--t0", type=float)
    parser.add_argument("--progress")
    args = parser.parse_args()
    if args.run:
        _in_fresh_process(args)
        return
    script = [sys.executable, __file__]
    results: dict[str, dict] = {"uptime_start": list(os.getloadavg())}
    if args.task == "cartpole":
        for seed in [] if args.no_tunerl else args.seeds:
            command = [*script, "--run", "tunerl", "--experiment", str(CARTPOLE_EXPERIMENT)]
            command += ["--seed", str(seed), "--timeout", str(args.timeout)]
            result = _fresh(command, args.timeout)
            results[f"tunerl_seed{seed}"] = result
            print(_summary(f"tunerl seed {seed}", result), flush=True)
        if args.no_rllib:
            results["rllib"] = {"status": "not run (--no-rllib)"}
        elif not Path(args.peer_python).exists():
            results["rllib"] = {"status": f"absent: {args.peer_python} does not exist"}
            print(f"rllib: {results['rllib']['status']}", flush=True)
        else:
            command = [args.peer_python, __file__, "--run", "rllib", "--seed", str(args.seeds[0])]
            command += ["--rllib-timeout", str(args.rllib_timeout)]
            result = _fresh(command, args.rllib_timeout + 120)
            results["rllib_seed0"] = result
            print(_summary(f"rllib 2.60 seed {args.seeds[0]}", result), flush=True)
    elif args.task == "spread":
        for name in args.experiments:
            path = EXPERIMENTS / "multi_agent" / f"{name}.yaml"
            command = [*script, "--run", "tunerl", "--experiment", str(path)]
            result = _fresh([*command, "--timeout", str(args.timeout)], args.timeout)
            results[name] = result
            print(_summary(name, result), flush=True)
    else:
        parser.error("give a task: cartpole or spread")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
