"""The `tunerl` command line.

tunerl train --algo PPO --env CartPole-v1 --stop env_runners/episode_return_mean=450
tunerl tune search_spaces/ppo_cartpole.yaml --num-samples 16 --scheduler asha
tunerl best ~/tunerl_results/<sweep> --export best_module
tunerl evaluate best_module --episodes 20
tunerl plot ~/tunerl_results/<sweep>
tunerl list PPO
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any


class CLIError(Exception):
    """A one-line message for the user; the command exits with status 2."""


# Exit statuses: 0 done; 1 `tunerl train` ended at a cap (env steps, iterations, time)
# without reaching its target; 2 a user error (bad option, config, file or checkpoint),
# one paragraph on stderr and no traceback; 130 interrupted.
TARGET_MISSED_EXIT = 1
ERROR_EXIT = 2
INTERRUPTED_EXIT = 130
DEFAULT_TRAIN_STOP = {"num_env_steps_sampled_lifetime": 100_000}
DEFAULT_RESULTS_DIR = Path("results")
RANKING_ROWS = 10
# `tunerl tune`'s options that go to `run_sweep` under the same name.
SWEEP_OPTIONS = (
    "search sampler scheduler max_concurrent storage_path name optuna_storage seed "
    "perturbation_interval"
).split()
# RLlib's `--framework`: tunerl runs on torch only.
FRAMEWORKS = ("torch",)


def _parse_stop(items: list[str]) -> dict[str, float]:
    """`--stop KEY=VALUE` (repeatable) or RLlib's `--stop '{"KEY": VALUE, ...}'`."""
    from tunerl.tuning.stopping import check_stop

    stop: dict[str, Any] = {}
    for item in items:
        if item.lstrip().startswith("{"):
            try:
                given = json.loads(item)
            except json.JSONDecodeError as error:
                raise CLIError(f"--stop {item!r}: not a valid JSON object ({error}).") from None
            if not isinstance(given, dict):
                raise CLIError(f"--stop {item!r}: expected a JSON object of key: number.")
            stop.update(given)
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(
                f"--stop {item!r}: expected KEY=VALUE, e.g. env_runners/episode_return_mean=450, "
                """or a JSON object, e.g. '{"training_iteration": 2}'."""
            )
        try:
            stop[key] = float(value)
        except ValueError:
            raise CLIError(f"--stop {item!r}: {value!r} is not a number.") from None
    return check_stop(stop, where="--stop ")


def _parse_config(text: str | None) -> dict[str, Any]:
    """`--config`: a JSON object, or a YAML/JSON file holding a mapping. RLlib's
    `"framework": "torch"` is accepted and dropped (torch is the only framework)."""
    from tunerl.core.config import ConfigError
    from tunerl.tuning.files import read_yaml

    if not text:
        return {}
    path = Path(text)
    if path.is_file():
        data = read_yaml(path, ConfigError)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CLIError(f"--config: neither a file nor valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise CLIError("--config must be a JSON object or a YAML/JSON file holding a mapping.")
    if "framework" in data:
        _framework(data.pop("framework"))
    return data


def _framework(name: Any) -> str:
    if name not in FRAMEWORKS:
        raise CLIError(
            f"framework {name!r}: tunerl runs on torch only; pass --framework torch (or "
            "--torch), or leave it out."
        )
    return name


def _print_progress(result: dict, start: float) -> None:
    from tunerl.core import metrics as m
    from tunerl.tuning.files import get_path

    episode_return = get_path(result, m.EPISODE_RETURN_MEAN_KEY)
    print(
        f"iter {result['training_iteration']:4d}  "
        f"steps {result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]:>9,d}  "
        f"return {float('nan') if episode_return is None else episode_return:8.2f}  "
        f"steps/s {result[m.ENV_STEPS_PER_S]:>9,.0f}  "
        f"time {time.perf_counter() - start:6.1f}s",
        flush=True,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from tunerl.experiments import load_experiment, train_until
    from tunerl.tuning.files import default_config
    from tunerl.tuning.stopping import reached_stop_keys, targets

    start = time.perf_counter()
    if args.framework is not None:
        _framework(args.framework)
    user_stop = _parse_stop(args.stop)
    if args.experiment:
        experiment = load_experiment(args.experiment)
        config, stop = experiment.algo_config(), {**experiment.stop, **user_stop}
        wanted, run_name = experiment.target_stop, f"{experiment.algo}_{experiment.env}"
    elif not args.env:
        raise CLIError("tunerl train needs --env (or an experiment file).")
    else:
        config, stop = default_config(args.algo, args.env), {**DEFAULT_TRAIN_STOP, **user_stop}
        wanted, run_name = targets(stop), f"{args.algo}_{args.env}"
    config.update_from_dict(_parse_config(args.config))
    if args.seed is not None:
        config.debugging(seed=args.seed)
    checkpoint_dir = Path(args.checkpoint_dir or DEFAULT_RESULTS_DIR / run_name.replace("/", "_"))
    run = train_until(
        config,
        stop,
        on_result=lambda result: _print_progress(result, start),
        checkpoint_path=checkpoint_dir / "checkpoint",
    )
    print(f"checkpoint: {run.checkpoint_path}")
    # As Tune's dict stopper: reaching any target is success.
    if not wanted or reached_stop_keys(run.result, wanted):
        return 0
    print(f"tunerl: {_missed_target(run, stop, wanted)}", file=sys.stderr)
    return TARGET_MISSED_EXIT


def _missed_target(run, stop: dict[str, float], wanted: dict[str, float]) -> str:
    """Which cap a run ended at, its return, and the target it missed."""
    from tunerl.core import metrics as m
    from tunerl.tuning.files import get_path
    from tunerl.tuning.stopping import BUDGET_UNITS

    cap = run.reached[0]
    limit = f"{stop[cap]:,.0f}" if float(stop[cap]).is_integer() else f"{stop[cap]:,g}"
    unit = BUDGET_UNITS.get(cap)
    where = f"the {limit} {unit} cap" if unit else f"the cap {cap}={limit}"
    episode_return = get_path(run.result, m.EPISODE_RETURN_MEAN_KEY)
    if episode_return is not None:
        where += f" with {m.EPISODE_RETURN_MEAN} {episode_return:.1f}"
    target = " or ".join(f"{key}={value:g}" for key, value in wanted.items())
    return f"stopped at {where}; the target {target} was not reached."


def _print_ranking(ranked, metric: str, limit: int = RANKING_ROWS) -> None:
    from tunerl.tuning.files import format_value, get_path
    from tunerl.tuning.plot import varied_numeric_fields

    fields = varied_numeric_fields([s.config for s in ranked])
    print(f"\n{'rank':>4}  {'score':>9}  {'env steps':>10}  config")
    for rank, score in enumerate(ranked[:limit], start=1):
        shown = ", ".join(f"{name}={format_value(get_path(score.config, name))}" for name in fields)
        print(f"{rank:>4}  {score.score:>9.2f}  {score.num_env_steps:>10,d}  {shown}")
    print(f"(score: {metric})")


def cmd_tune(args: argparse.Namespace) -> int:
    from tunerl.experiments import DEFAULT_NUM_SAMPLES, load_sweep_file
    from tunerl.tuning import rank_trials, resume_sweep, run_sweep
    from tunerl.tuning.console import progress_table, start_ray
    from tunerl.tuning.sweep import sweep_info, unfinished_trials

    if args.resume:
        info = sweep_info(args.target)
        start_ray()
        results = resume_sweep(args.target)
        metric, mode = info["metric"], info["mode"]
    elif Path(args.target).is_dir():
        raise CLIError(f"{args.target} is a folder: to continue the sweep in it, add --resume.")
    else:
        space, experiment = load_sweep_file(args.target)
        stop = {**space.stop, **_parse_stop(args.stop)}
        num_samples = args.num_samples or (experiment.num_samples if experiment else None)
        start_ray()
        results = run_sweep(
            space,
            num_samples=num_samples or DEFAULT_NUM_SAMPLES,
            stop=stop or None,
            progress_reporter=progress_table(space),
            **{option: getattr(args, option) for option in SWEEP_OPTIONS},
        )
        metric, mode = space.metric, space.mode
    ranked = rank_trials(results, metric, mode)
    _print_ranking(ranked, metric)
    print(f"\nexperiment: {results.experiment_path}")
    if ranked and ranked[0].checkpoint:
        print(f"best checkpoint: {ranked[0].checkpoint}")
    print(f"tensorboard: tensorboard --logdir {results.experiment_path}")
    if unfinished_trials(results.experiment_path):
        print(
            f"tunerl: the sweep was interrupted; continue it with: "
            f"tunerl tune --resume {results.experiment_path}",
            file=sys.stderr,
        )
        return INTERRUPTED_EXIT
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tunerl.tuning import evaluate_checkpoint

    env_config = {"render_mode": "human"} if args.render else None
    stats = evaluate_checkpoint(
        args.checkpoint,
        episodes=args.episodes,
        seed=args.seed,
        explore=args.explore,
        env_config=env_config,
        allow_import=args.allow_import,
        module_id=args.module_id,
    )
    for i, (ret, length) in enumerate(zip(stats["episode_returns"], stats["episode_lengths"])):
        print(f"episode {i + 1:3d}  return {ret:9.2f}  length {length}")
    print(f"mean return {stats['mean']:.2f} +- {stats['std']:.2f} over {args.episodes} episodes")
    per_module = stats.get("module_episode_returns")
    if per_module:
        ids = sorted({mid for episode in per_module for mid in episode})
        means = {mid: statistics.mean(ep[mid] for ep in per_module if mid in ep) for mid in ids}
        print("per module: " + ", ".join(f"{mid} {value:.2f}" for mid, value in means.items()))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from tunerl.tuning import rank_trials

    ranked = rank_trials(args.experiment_dir, args.metric, args.mode, args.by)
    _print_ranking(ranked, args.metric, args.top)
    if ranked and ranked[0].checkpoint:
        print(f"best checkpoint: {ranked[0].checkpoint}")
    if args.export:
        from tunerl.tuning import export_best

        out = export_best(args.experiment_dir, args.export, args.metric, args.mode, args.by)
        print(f"exported: {out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from tunerl.tuning.plot import plot_experiment

    print(plot_experiment(args.experiment_dir, args.out, args.metric, args.mode))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from tunerl import ALGORITHMS
    from tunerl.tuning.files import algorithm_class

    for name in [args.algo] if args.algo else sorted(ALGORITHMS):
        algo_class = algorithm_class(name)
        print(f"{name}  ({algo_class.config_class.__name__})")
        by_section: dict[str, list] = {}
        for field_name, field in algo_class.config_class.FIELDS.items():
            by_section.setdefault(field.section, []).append((field_name, field))
        for section, fields in by_section.items():
            print(f"  .{section}()")
            for field_name, field in fields:
                print(f"    {field_name:<36} = {field.default!r:<14} {field.doc}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with the closest valid option named when one is misspelled."""

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # The subcommand's parser knows its options; the top level one does not.
            command = getattr(parsed, "command", None)
            parser = self._subcommand_parsers().get(command, self)
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _subcommand_parsers(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    def error(self, message: str):
        match = re.search(r"unrecognized arguments: (\S+)", message)
        if match:
            options = [o for action in self._actions for o in action.option_strings]
            close = difflib.get_close_matches(match.group(1).split("=")[0], options, n=1)
            if close:
                message += f" (did you mean {close[0]}?)"
        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:
            choices = re.findall(r"'([^']*)'", match.group(2))
            close = difflib.get_close_matches(match.group(1), choices, n=1, cutoff=0.4)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        self.exit(ERROR_EXIT, f"{self.prog}: error: {message}\n")


def _stop_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--stop", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    from tunerl.core import metrics as m
    from tunerl.experiments import DEFAULT_NUM_SAMPLES
    from tunerl.tuning.ranking import RANK_BY
    from tunerl.tuning.sweep import (
        DEFAULT_PERTURBATION_INTERVAL,
        SAMPLERS,
        SCHEDULERS,
        SEARCHES,
    )

    parser = _Parser(prog="tunerl", description="tunerl: RL algorithms as Ray Tune Trainables.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train one algorithm in this process")
    train.add_argument("experiment", nargs="?", help="an experiments/*.yaml file (optional)")
    train.add_argument("--algo", "--run", default="PPO", help="algorithm (--run as in RLlib)")
    train.add_argument("--env", help="Gymnasium id or registered env name")
    train.add_argument("--config", help="config fields as JSON, or a YAML/JSON file")
    _stop_option(
        train,
        "stop when a result key reaches VALUE (repeatable; or a JSON object as in RLlib); "
        "beside it the cap num_env_steps_sampled_lifetime=100000 holds. Ending at a cap "
        "without reaching the other keys exits with status 1",
    )
    train.add_argument("--framework", help="RLlib's option: torch is the only framework")
    train.add_argument("--torch", action="store_true", help="RLlib's spelling of --framework torch")
    train.add_argument("--seed", type=int, help="seed of every random stream")
    train.add_argument("--checkpoint-dir", help="for the final checkpoint (results/<algo>_<env>)")
    train.set_defaults(func=cmd_train)

    tune_cmd = commands.add_parser("tune", help="run a sweep (search space or experiment file)")
    tune_cmd.add_argument("target", help="search space, experiment, or sweep folder (--resume)")
    tune_cmd.add_argument("--num-samples", type=int, help=f"trials (else {DEFAULT_NUM_SAMPLES})")
    tune_cmd.add_argument("--search", choices=SEARCHES, default="optuna")
    tune_cmd.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna sampler")
    tune_cmd.add_argument("--scheduler", choices=SCHEDULERS, default="none")
    tune_cmd.add_argument(
        "--perturbation-interval", type=int, default=DEFAULT_PERTURBATION_INTERVAL, help="PBT/PB2"
    )
    tune_cmd.add_argument("--max-concurrent", type=int, help="trials running at once")
    _stop_option(
        tune_cmd,
        "stop a trial when a result key reaches VALUE (repeatable, or a JSON object; "
        "default: the file's)",
    )
    tune_cmd.add_argument("--storage-path", help="results root (default ~/tunerl_results)")
    tune_cmd.add_argument("--name", help="experiment name (a folder under the storage path)")
    tune_cmd.add_argument("--optuna-storage", help="e.g. sqlite:///study.db (optuna-dashboard)")
    tune_cmd.add_argument("--seed", type=int, help="seed of the sampler and every trial")
    tune_cmd.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    tune_cmd.set_defaults(func=cmd_tune)

    evaluate = commands.add_parser("evaluate", help="run episodes with a checkpoint's module")
    evaluate.add_argument("checkpoint", help="a checkpoint, or a folder from tunerl best --export")
    evaluate.add_argument("--episodes", type=int, default=10)
    evaluate.add_argument("--seed", type=int)
    evaluate.add_argument(
        "--module-id",
        default="default_policy",
        help="the module that acts (on a multi-agent env every module acts)",
    )
    evaluate.add_argument("--explore", action="store_true", help="sample actions (default: greedy)")
    evaluate.add_argument("--render", action="store_true", help="render_mode='human'")
    evaluate.add_argument(
        "--allow-import",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="let the checkpoint's classes be imported from PACKAGE (repeatable); by default "
        "loading imports nothing",
    )
    evaluate.set_defaults(func=cmd_evaluate)

    for name, func, help_text in (
        ("best", cmd_best, "rank a sweep's trials"),
        ("plot", cmd_plot, "PNG of learning curves and the search"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("experiment_dir")
        sub.add_argument("--metric", default=m.EPISODE_RETURN_MEAN_KEY)
        sub.add_argument("--mode", choices=("max", "min"), default="max")
        if name == "best":
            sub.add_argument("--by", choices=RANK_BY, default="last")
            sub.add_argument("--top", type=int, default=RANKING_ROWS)
            sub.add_argument("--export", metavar="DIR", help="copy the best module out to DIR")
        else:
            sub.add_argument("--out", help="PNG path (default <experiment>/sweep.png)")
        sub.set_defaults(func=func)

    list_cmd = commands.add_parser("list", help="algorithms and their config fields")
    list_cmd.add_argument("algo", nargs="?")
    list_cmd.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tunerl.tuning.console import quiet_libraries, show_log_records, user_error_message

    quiet_libraries()
    show_log_records()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("tunerl: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as error:
        message = str(error) if isinstance(error, CLIError) else user_error_message(error)
        if message is None:
            raise
        print(f"tunerl: error: {message}", file=sys.stderr)
        return ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
