"""Sweep benchmark: 8 trials of PPO on CartPole-v1 with OptunaSearch, 2 at a time, tunerl
against RLlib with Ray Tune.

    python benchmarks/sweep_cartpole.py [--peers rllib] [--peer-python /work/peers-venv/bin/python]
        [--num-samples 8] [--max-concurrent 2] [--json out.json]

Each tool runs its whole sweep in a fresh process that starts Ray with
`ray.init(num_cpus=--max-concurrent, include_dashboard=False)`; a trial reserves one CPU, so
--max-concurrent trials run at once. A trial stops at a training return (mean of the last 100
episodes) of --target (450) or after --max-steps (100k) env steps. Measured:
  - total s: from process start (imports and Ray start included) to the end of tuner.fit();
  - solved: trials whose final training return is at least --target;
  - env steps: the median over solved trials of the env steps they sampled;
  - start-up s: per trial, from the moment its CPU was free (tuner.fit() called, or the trial
    before it on that CPU completed) until its first training iteration began, seen by a Tune
    Callback on the driver; median and max, for the first trials (new actors) and the later
    ones (reused actors for tunerl; new ones for RLlib, which cannot reuse them).
Both search the fields and ranges of search_spaces/ppo_cartpole.yaml (or --fields of them) with
the same seeded TPE sampler and points_to_evaluate. tunerl's fixed part is its experiment file
(experiments/ppo_cartpole.yaml), RLlib's its tuned example (peers.py) with no remote env
runners; RLlib runs in --peer-python (sweep_peers.py). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _runner import print_result, run_fresh

BENCHMARK_DIR = Path(__file__).resolve().parent
DEFAULT_SEARCH_SPACE = BENCHMARK_DIR.parent / "search_spaces" / "ppo_cartpole.yaml"
DEFAULT_EXPERIMENT = BENCHMARK_DIR.parent / "experiments" / "ppo_cartpole.yaml"
PEERS = ("rllib",)
RETURN_KEY = "env_runners/episode_return_mean"
ENV_STEPS_KEY = "num_env_steps_sampled_lifetime"
# tunerl's build_tuner defaults, given to both tools: checkpoints cost time in a sweep.
CHECKPOINT_FREQUENCY = 5
NUM_TO_KEEP = 2
VERSION_PACKAGES = ("tunerl", "ray", "optuna", "torch", "gymnasium", "numpy")


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


def _lookup(result: dict, key: str):
    """`result["env_runners"]["episode_return_mean"]` for "env_runners/episode_return_mean"."""
    value = result
    for part in key.split("/"):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _trial_clock():
    """A Tune Callback recording, on the driver, when each trial started (Tune calls
    `on_trial_start` once the trial's actor is ready: after a new actor's `setup()`, after a
    reused one's `reset_config()`), when its first training iteration began (the first
    result's arrival minus its `time_this_iter_s`), which process ran it, and when it ended."""
    from ray import tune

    class TrialClock(tune.Callback):
        def __init__(self) -> None:
            self.trials: dict[str, dict] = {}
            self.final: list = []

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self.trials[trial.trial_id] = {"start": time.time()}

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            record = self.trials[trial.trial_id]
            if "first_iteration" not in record:
                record["first_iteration"] = time.time() - result["time_this_iter_s"]
                record["pid"] = result["pid"]

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.trials[trial.trial_id]["end"] = time.time()

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.trials.setdefault(trial.trial_id, {})["end"] = time.time()

        def on_experiment_end(self, trials, **info) -> None:
            self.final = list(trials)

    return TrialClock()


def _startup_times(records: list[dict], fit_start: float, max_concurrent: int) -> None:
    """Adds to each record (trials in start order) when its CPU became free and how it got an
    actor: "first" (one of the first new actors), "reused" (the process of an earlier trial)
    or "new" (a new actor later on). A reused actor's CPU was freed when the trial before it
    in that process ended; a new actor takes the earliest CPU freed before it started."""
    free_since = [fit_start] * max_concurrent
    last_end_by_pid: dict[int, float] = {}
    for record in records:
        pid = record.get("pid")
        if pid in last_end_by_pid:
            record["actor"] = "reused"
            record["free_since"] = last_end_by_pid[pid]
        else:
            earlier = [t for t in free_since if t <= record["start"]]
            record["free_since"] = min(earlier) if earlier else None
            record["actor"] = "first" if record["free_since"] == fit_start else "new"
        if record["free_since"] in free_since:
            free_since.remove(record["free_since"])
        if record.get("end") is not None:
            free_since.append(record["end"])
            if pid is not None:
                last_end_by_pid[pid] = record["end"]


def _trial_rows(
    trial_clock, fit_start: float, max_concurrent: int, searched: dict[str, str]
) -> list[dict]:
    """One row per trial, in the order Tune created them; times in seconds after fit()."""
    rows = []
    for trial in trial_clock.final:
        record = trial_clock.trials.get(trial.trial_id, {})
        last = trial.last_result or {}
        return_mean = _lookup(last, RETURN_KEY)
        rows.append(
            {
                "trial_id": trial.trial_id,
                "status": trial.status,
                "config": {name: _lookup(trial.config, key) for name, key in searched.items()},
                "env_steps": _lookup(last, ENV_STEPS_KEY),
                "return_mean": None if return_mean is None else float(return_mean),
                "iterations": last.get("training_iteration"),
                "training_s": last.get("time_total_s"),
                **{k: record.get(k) for k in ("start", "first_iteration", "pid", "end")},
            }
        )
    started = sorted((r for r in rows if r["start"] is not None), key=lambda r: r["start"])
    _startup_times(started, fit_start, max_concurrent)
    for row in rows:
        begun = row.get("first_iteration")
        free_since = row.get("free_since")
        row["startup_s"] = None if begun is None or free_since is None else begun - free_since
        # Counted from Tune's on_trial_start instead: Tune calls it once the actor is ready,
        # so this leaves out actor creation, setup() and reset_config().
        row["after_trial_start_s"] = None if begun is None else begun - row["start"]
        for key in ("start", "first_iteration", "end", "free_since"):
            row[key] = None if row.get(key) is None else row[key] - fit_start
    return rows


def _fit(tuner, clock, args: argparse.Namespace, trial_clock, searched: dict[str, str]) -> dict:
    """Runs the sweep and measures it; Ray is shut down after the clock stopped."""
    import ray

    fit_start_s = clock()
    fit_start = time.time()
    tuner.fit()
    end_s = clock()
    ray.shutdown()
    return {
        "end_s": end_s,
        "fit_start_s": fit_start_s,
        "trials": _trial_rows(trial_clock, fit_start, args.max_concurrent, searched),
    }


def _start_ray(num_cpus: int, clock) -> dict:
    """Starts Ray as both tools do; returns when (from process start) it began and was up."""
    import ray

    ray_init_s = clock()
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    return {"ray_init_s": ray_init_s, "ray_started_s": clock()}


def run_tunerl(args: argparse.Namespace, clock) -> dict:
    from tunerl.experiments import load_experiment
    from tunerl.tuning import build_tuner, load_search_space

    space = load_search_space(args.search_space)
    fields = args.fields or [p.name for p in space.params]
    space.params = [p for p in space.params if p.name in fields]
    space.points_to_evaluate = [
        {name: value for name, value in point.items() if name in fields}
        for point in space.points_to_evaluate
    ]
    # As Experiment.search_space() combines them: the experiment's config under the space's
    # own fixed fields; the searched fields are drawn per trial.
    space.config = {**load_experiment(args.experiment).config, **space.config}
    started = _start_ray(args.max_concurrent, clock)
    tuner = build_tuner(
        space,
        num_samples=args.num_samples,
        search="optuna",
        sampler="tpe",
        max_concurrent=args.max_concurrent,
        stop={RETURN_KEY: args.target, ENV_STEPS_KEY: args.max_steps},
        storage_path=args.storage_path,
        name="tunerl",
        seed=args.seed,
        checkpoint_frequency=CHECKPOINT_FREQUENCY,
        num_to_keep=NUM_TO_KEEP,
        reuse_actors=True,
    )
    trial_clock = _trial_clock()
    # Set on the Tuner's RunConfig (a Tuner has no public setter for it), next to whatever
    # callbacks build_tuner put there, so this runs with every build_tuner version.
    run_config = tuner._local_tuner.get_run_config()
    run_config.callbacks = [*(run_config.callbacks or []), trial_clock]
    # Both tools run without Tune's progress output. With build_tuner as of commit ea6af07
    # (verbose=1) that output fails at the end of fit(): results carry tunerl's PPOConfig as
    # "config" (Algorithm.setup replaces Tune's dict), on which Tune calls .keys().
    run_config.verbose = 0
    measured = _fit(tuner, clock, args, trial_clock, {p.name: p.name for p in space.params})
    fixed = {name: value for name, value in space.config.items() if name not in fields}
    fixed["seed"] = args.seed  # build_tuner's seed, in every trial's config
    return {**started, **measured, "settings": {"fixed": fixed, "reuse_actors": True}}


def read_search(path: str, fields: list[str] | None) -> tuple[dict, list[dict], str]:
    """The YAML file's searched fields (or `fields` of them), points_to_evaluate and metric,
    read as plain data (the RLlib peer has no tunerl)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    space = {name: spec for name, spec in data["space"].items() if not fields or name in fields}
    points = [
        {name: value for name, value in point.items() if name in space}
        for point in data.get("points_to_evaluate") or []
    ]
    return space, points, data.get("metric", RETURN_KEY)


def run_rllib(args: argparse.Namespace, clock) -> dict:
    import sweep_peers

    space, points, metric = read_search(args.search_space, args.fields)
    started = _start_ray(args.max_concurrent, clock)
    trial_clock = _trial_clock()
    tuner = sweep_peers.rllib_tuner(
        space,
        points,
        metric=metric,
        stop={RETURN_KEY: args.target, ENV_STEPS_KEY: args.max_steps},
        num_samples=args.num_samples,
        max_concurrent=args.max_concurrent,
        seed=args.seed,
        storage_path=args.storage_path,
        name="rllib",
        checkpoint_frequency=CHECKPOINT_FREQUENCY,
        num_to_keep=NUM_TO_KEEP,
        callbacks=[trial_clock],
    )
    searched = {name: sweep_peers.RLLIB_DICT_KEYS.get(name, name) for name in space}
    measured = _fit(tuner, clock, args, trial_clock, searched)
    return {**started, **measured, "settings": {"fixed": sweep_peers.rllib_settings()}}


# Run name -> (function, top-level modules whose absence means "not installed").
RUNS = {
    "tunerl": (run_tunerl, ("tunerl", "ray", "optuna", "torch", "gymnasium")),
    # ray[tune] without the rllib extra lacks dm_tree (`tree`), gymnasium, ...
    "rllib": (run_rllib, ("ray", "tree", "gymnasium", "torch", "lz4", "scipy", "optuna")),
}


def run_in_this_process(args: argparse.Namespace) -> None:
    """Runs one sweep and prints its measurement as one JSON line for the parent."""

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
def launch(run: str, python: str, args: argparse.Namespace) -> dict:
    """One sweep in a fresh process; its clock starts just before the process does."""
    options = {
        "--run": run,
        "--search-space": args.search_space,
        "--experiment": args.experiment,
        "--num-samples": args.num_samples,
        "--max-concurrent": args.max_concurrent,
        "--target": args.target,
        "--max-steps": args.max_steps,
        "--seed": args.seed,
        "--storage-path": Path(args.storage_path, run),
    }
    if args.fields:
        options["--fields"] = ",".join(args.fields)
    command = [python, str(Path(__file__).resolve())]
    command += [str(part) for option in options.items() for part in option]
    return run_fresh(command, args.timeout)


def _format_config(config: dict) -> str:
    return ", ".join(
        f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in config.items()
    )


def _solved(trial: dict, target: float) -> bool:
    return trial["return_mean"] is not None and trial["return_mean"] >= target


def describe_trial(index: int, trial: dict, target: float) -> str:
    return_mean = trial["return_mean"]
    outcome = (
        f"{'solved' if _solved(trial, target) else 'not solved'}, return "
        f"{'n/a' if return_mean is None else f'{return_mean:.1f}'} at "
        f"{int(trial['env_steps'] or 0):,} steps"
    )
    startup = trial["startup_s"]
    startup = "n/a" if startup is None else f"{startup:.1f} s"
    return (
        f"  trial {index} ({_format_config(trial['config'])}): {trial['status']}, {outcome}, "
        f"training {trial['training_s'] or 0:.1f} s, start-up {startup} ({trial.get('actor')})"
    )


def _median_max(values: list[float]) -> dict:
    if not values:
        return {"median": None, "max": None, "count": 0}
    return {"median": statistics.median(values), "max": max(values), "count": len(values)}


def summarize(result: dict, target: float) -> dict:
    trials = result["trials"]
    solved = [t for t in trials if _solved(t, target)]
    startups = {
        kind: [
            t["startup_s"] for t in trials if t.get("actor") in kinds and t["startup_s"] is not None
        ]
        for kind, kinds in (("first", ("first",)), ("later", ("reused", "new")))
    }
    later_kinds = sorted({t["actor"] for t in trials if t.get("actor") in ("reused", "new")})
    return {
        "total_s": result["end_s"],
        "ray_init_s": result["ray_init_s"],
        "ray_started_s": result["ray_started_s"],
        "fit_start_s": result["fit_start_s"],
        "num_trials": len(trials),
        "num_solved": len(solved),
        "num_errors": sum(t["status"] == "ERROR" for t in trials),
        "env_steps_solved_median": (
            statistics.median(t["env_steps"] for t in solved) if solved else None
        ),
        "startup_s_first": _median_max(startups["first"]),
        "startup_s_later": _median_max(startups["later"]),
        "later_actors": "/".join(later_kinds) or "-",
        "after_trial_start_s": _median_max(
            [t["after_trial_start_s"] for t in trials if t["after_trial_start_s"] is not None]
        ),
    }


def _format_median_max(stats: dict) -> str:
    if stats["median"] is None:
        return "-"
    return f"{stats['median']:.1f} / {stats['max']:.1f}"


def table(runs: list[dict], args: argparse.Namespace) -> str:
    header = (
        "tool",
        "total s",
        f"solved/{args.num_samples}",
        "env steps (median, solved)",
        "start-up s first (med / max)",
        "start-up s later (med / max)",
        "later actors",
    )
    rows = [header]
    for run in runs:
        if run["result"]["status"] != "ok":
            rows.append((run["name"], run["result"]["status"], "", "", "", "", ""))
            continue
        summary = run["summary"]
        steps = summary["env_steps_solved_median"]
        solved = f"{summary['num_solved']}/{summary['num_trials']}"
        if summary["num_errors"]:
            solved += f" ({summary['num_errors']} failed)"
        rows.append(
            (
                run["name"],
                f"{summary['total_s']:.1f}",
                solved,
                "-" if steps is None else f"{steps:,.0f}",
                _format_median_max(summary["startup_s_first"]),
                _format_median_max(summary["startup_s_later"]),
                summary["later_actors"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def same_search(runs: list[dict]) -> str | None:
    """Whether every tool's trials drew the same values, trial by trial (they should while
    TPE samples at random: its first 10 trials)."""
    done = [run for run in runs if run["result"]["status"] == "ok"]
    if len(done) < 2:
        return None
    configs = [[t["config"] for t in run["result"]["trials"]] for run in done]
    if all(c == configs[0] for c in configs[1:]):
        return "the tools' trials drew the same searched values, trial by trial"
    return "the tools' trials drew different searched values (see --json)"


def run_all(args: argparse.Namespace) -> list[dict]:
    pythons = {"tunerl": sys.executable, "rllib": args.peer_python}
    runs = []
    for tool in ("tunerl", *args.peers):
        python = pythons[tool]
        if tool == "tunerl":
            name = "tunerl PPO (actors reused)"
        else:
            name = "RLlib PPO (tuned example, 0 env runners)"
        if python is None:
            result = {"status": "not installed (no --peer-python)"}
        else:
            result = launch(tool, python, args)
        run = {"tool": tool, "name": name, "python": python, "result": result}
        if result["status"] == "ok":
            run["summary"] = summarize(result, args.target)
            version = result["versions"].get("ray" if tool == "rllib" else "tunerl")
            run["name"] = name.replace(" PPO", f" {version} PPO", 1)
            summary = run["summary"]
            print(
                f"{run['name']}: {summary['total_s']:.1f} s from process start (ray.init() "
                f"at {summary['ray_init_s']:.1f} s, Ray up at {summary['ray_started_s']:.1f} s, "
                f"tuner.fit() called at {summary['fit_start_s']:.1f} s)",
                file=sys.stderr,
            )
            for index, trial in enumerate(result["trials"], start=1):
                print(describe_trial(index, trial, args.target), file=sys.stderr)
        else:
            print(f"{name}: {result['status']}", file=sys.stderr)
            if result.get("error"):
                print(result["error"], file=sys.stderr)
        runs.append(run)
    return runs


def _strict(value):
    """NaN as null, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


def to_json(runs: list[dict], args: argparse.Namespace, space: dict, points: list) -> dict:
    return _strict(
        {
            "num_samples": args.num_samples,
            "max_concurrent": args.max_concurrent,
            "ray_num_cpus": args.max_concurrent,
            "target": args.target,
            "max_steps": args.max_steps,
            "seed": args.seed,
            "search_space": str(args.search_space),
            "searched": space,
            "points_to_evaluate": points,
            "experiment": str(args.experiment),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "runs": runs,
        }
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See benchmarks/README.md.",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"Comma-separated, from {','.join(PEERS)}; '' for none.",
    )
    parser.add_argument(
        "--peer-python",
        default=None,
        help="Interpreter with ray[rllib] and optuna (rllib is 'not installed' without it).",
    )
    parser.add_argument("--num-samples", type=int, default=8, help="Trials per tool.")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=2,
        help="Trials running at once; also Ray's num_cpus (a trial reserves one CPU).",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=450.0,
        help="Training return (mean of the last 100 episodes) at which a trial stops, solved.",
    )
    parser.add_argument(
        "--max-steps", type=int, default=100_000, help="Env steps at which a trial stops."
    )
    parser.add_argument("--seed", type=int, default=1, help="Optuna sampler and training seed.")
    parser.add_argument(
        "--search-space",
        default=str(DEFAULT_SEARCH_SPACE),
        help="Search-space file whose space and points_to_evaluate both tools search.",
    )
    parser.add_argument(
        "--fields",
        default=None,
        help="Comma-separated searched fields to keep (e.g. lr,num_epochs); default all.",
    )
    parser.add_argument(
        "--experiment",
        default=str(DEFAULT_EXPERIMENT),
        help="tunerl's fixed settings (the experiment's config).",
    )
    parser.add_argument(
        "--storage-path",
        default=None,
        help="Where Tune writes the trials (default: a temporary directory, deleted after).",
    )
    parser.add_argument("--json", default=None, help="Also write the results here.")
    parser.add_argument("--timeout", type=float, default=3600.0, help="Seconds per tool.")
    # One sweep in this process (how the parent starts its fresh processes).
    parser.add_argument("--run", choices=sorted(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.peers = [p for p in args.peers.split(",") if p]
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"--peers: unknown {sorted(unknown)}; choose from {','.join(PEERS)}.")
    args.fields = [f for f in args.fields.split(",") if f] if args.fields else None
    if args.run is None:
        space, _, _ = read_search(args.search_space, None)
        missing = set(args.fields or ()) - set(space)
        if missing:
            parser.error(f"--fields: {sorted(missing)} are not searched in {args.search_space}.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.run is not None:
        run_in_this_process(args)
        return
    space, points, _ = read_search(args.search_space, args.fields)
    temporary = args.storage_path is None
    if temporary:
        args.storage_path = tempfile.mkdtemp(prefix="sweep_cartpole_")
    print(
        f"{args.num_samples} trials, {args.max_concurrent} at a time "
        f"(ray.init(num_cpus={args.max_concurrent})); OptunaSearch, TPE seed {args.seed}, over "
        f"{', '.join(space)} ({len(points)} points_to_evaluate) from {args.search_space}; a trial "
        f"stops at a training return of {args.target:g} or {args.max_steps:,} env steps.\n"
        "RLlib runs with num_env_runners=0 (its tuned example keeps the default of 2) so that a "
        f"trial reserves one CPU and {args.max_concurrent} fit in {args.max_concurrent} CPUs.",
        file=sys.stderr,
    )
    try:
        runs = run_all(args)
    finally:
        if temporary:
            shutil.rmtree(args.storage_path, ignore_errors=True)
    note = same_search(runs)
    if note:
        print(note, file=sys.stderr)
    print(table(runs, args))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(runs, args, space, points), indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
