"""The `tunerl` command line: `tunerl train` runs one algorithm in this process.

tunerl train --algo PPO --env CartPole-v1 --stop env_runners/episode_return_mean=450
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any


class CLIError(Exception):
    """A one-line message for the user; the command exits with status 2."""


def _parse_stop(items: list[str]) -> dict[str, float]:
    stop = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(
                f"--stop {item!r}: expected KEY=VALUE, e.g. env_runners/episode_return_mean=450."
            )
        try:
            stop[key] = float(value)
        except ValueError:
            raise CLIError(f"--stop {item!r}: {value!r} is not a number.") from None
    return stop


def _parse_config(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    path = Path(text)
    if path.is_file():
        import yaml

        data = yaml.safe_load(path.read_text())
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CLIError(f"--config: neither a file nor valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise CLIError("--config must be a JSON object or a YAML/JSON file holding a mapping.")
    return data


def _algo_class(name: str):
    from tunerl import ALGORITHMS

    if name not in ALGORITHMS:
        close = difflib.get_close_matches(name.upper(), list(ALGORITHMS), n=1, cutoff=0.3)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CLIError(f"Unknown algorithm {name!r}; available: {sorted(ALGORITHMS)}.{hint}")
    return ALGORITHMS[name]


def cmd_train(args: argparse.Namespace) -> int:
    from tunerl.experiments import lookup, should_stop

    algo_class = _algo_class(args.algo)
    stop = _parse_stop(args.stop) or {"num_env_steps_sampled_lifetime": 100_000}
    config = algo_class.get_default_config().environment(args.env)
    config.update_from_dict(_parse_config(args.config))
    if args.seed is not None:
        config.debugging(seed=args.seed)
    start = time.perf_counter()
    algo = config.build_algo()
    try:
        while True:
            result = algo.train()
            ret = lookup(result, "env_runners/episode_return_mean")
            print(
                f"iter {result['training_iteration']:4d}  "
                f"steps {result['num_env_steps_sampled_lifetime']:>9,d}  "
                f"return {ret:8.2f}  "
                f"steps/s {result['env_steps_per_s']:>9,.0f}  "
                f"time {time.perf_counter() - start:6.1f}s",
                flush=True,
            )
            if should_stop(result, stop):
                break
        checkpoint_dir = Path(args.checkpoint_dir or Path("results") / f"{args.algo}_{args.env}")
        path = algo.save_to_path(checkpoint_dir / "checkpoint")
        print(f"checkpoint: {path}")
    finally:
        algo.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunerl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one algorithm in this process")
    train.add_argument("--algo", default="PPO", help="algorithm name (default PPO)")
    train.add_argument("--env", required=True, help="Gymnasium id or registered env name")
    train.add_argument("--config", help="config fields as JSON, or a YAML/JSON file")
    train.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="stop when a result key reaches VALUE (repeatable); default "
        "num_env_steps_sampled_lifetime=100000",
    )
    train.add_argument("--seed", type=int, help="seed of every random stream")
    train.add_argument(
        "--checkpoint-dir", help="where the final checkpoint goes (default results/<algo>_<env>)"
    )
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    args = build_parser().parse_args(argv)
    from tunerl.core.checkpoint_io import CheckpointError
    from tunerl.core.config import ConfigError
    from tunerl.env.registry import EnvError

    try:
        return args.func(args)
    except (CLIError, ConfigError, EnvError, CheckpointError) as error:
        print(f"tunerl: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
