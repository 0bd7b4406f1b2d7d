"""The command line, run as users run it (`python -m tunerl ...` in a subprocess): a sweep,
then ranking, export, evaluation and a plot of it; training, RLlib's spellings and the exit
status of a run that misses its target; user errors as a short message, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import gymnasium as gym
import pytest
import ray
import yaml

from tunerl.cli import main
from tunerl.core.rl_module import DefaultRLModule

from .sweep_helpers import TINY_CONFIG

COMMANDS = ("train", "tune", "evaluate", "best", "plot", "list")
TINY_CONFIG_JSON = json.dumps(TINY_CONFIG)
# Loggers whose level `tunerl` sets for itself (tunerl.cli._quiet).
CLI_LOGGERS = ("ray",)


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "TUNERL_RESULTS": str(tmp_path / "default_results")}  # never ~/
    if ray.is_initialized():
        # Sweeps join this test session's Ray instead of starting one of their own.
        env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    return env


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tunerl", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env(cwd),
        timeout=300,
    )


def run_all(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Runs the commands at once (each mostly waits on imports) and returns their results."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tunerl", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=cli_env(cwd),
        )
        for args in commands
    ]
    done = []
    for args, process in zip(commands, processes):
        stdout, stderr = process.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return done


def assert_quiet(process: subprocess.CompletedProcess) -> None:
    noise = process.stdout + process.stderr
    for word in ("Warning", "WARNING", "Traceback", "Deprecat"):
        assert word not in noise, noise


@pytest.fixture
def cli(capsys) -> Iterator[Callable[..., tuple[int, str, str]]]:
    """`cli(*args) -> (exit status, stdout, stderr)` of `tunerl` run in this process; the
    environment variables and log levels it sets for itself are put back afterwards."""
    environ = dict(os.environ)
    levels = {name: logging.getLogger(name).level for name in CLI_LOGGERS}

    def call(*args: str) -> tuple[int, str, str]:
        try:
            status = main(list(args))
        except SystemExit as exit_info:  # argparse's own exits
            status = exit_info.code
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    yield call
    os.environ.clear()
    os.environ.update(environ)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="module")
def cli_sweep(ray_cluster, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`tunerl tune EXPERIMENT` on an experiment that names a tiny search space."""
    root = tmp_path_factory.mktemp("cli")
    space = {
        "algo": "PPO",
        "env": "CartPole-v1",
        "config": TINY_CONFIG,
        "space": {"lr": {"loguniform": [1e-4, 3e-3]}, "gamma": {"uniform": [0.95, 0.99]}},
    }
    (root / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    experiment = {
        "algo": "PPO",
        "env": "CartPole-v1",
        "config": {"seed": 1},
        "stop": {"training_iteration": 2},
        "target": {"metric": "env_runners/episode_return_mean", "min": 450},
        "search_space": "space.yaml",
        "num_samples": 2,
    }
    (root / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    process = run(
        "tune", "experiment.yaml", "--storage-path", "results", "--name", "sweep", cwd=root
    )
    return process, root / "results" / "sweep"


def test_tune_shows_the_progress_table_then_the_ranking_and_the_best_checkpoint(cli_sweep):
    process, experiment_dir = cli_sweep
    assert process.returncode == 0, process.stderr
    out = process.stdout
    assert re.search(r"\| Trial name +\| status +\|.*\| +lr \| +gamma \|", out), out
    assert out.count("TERMINATED") >= 2
    ranking = out[out.index("rank      score") :].splitlines()
    assert [line.split()[0] for line in ranking[1:3]] == ["1", "2"]
    best = re.search(r"^best checkpoint: (.+)$", out, re.MULTILINE).group(1)
    assert Path(best).parent.parent == experiment_dir
    assert (Path(best) / "MANIFEST.json").is_file()
    assert f"tensorboard --logdir {experiment_dir}" in out
    assert_quiet(process)


def test_best_exports_evaluate_runs_the_export_and_plot_writes_a_png(cli_sweep, cli, tmp_path):
    _, experiment_dir = cli_sweep
    best = run("best", str(experiment_dir), "--by", "mean_last", "--export", "out", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    assert f"exported: {tmp_path / 'out'}" in best.stdout
    assert (tmp_path / "out" / "rl_module" / "default_policy" / "module_spec.json").is_file()
    checkpoint = re.search(r"^best checkpoint: (.+)$", best.stdout, re.MULTILINE).group(1)
    from_export, plot = run_all(
        [
            ["evaluate", "out", "--episodes", "3", "--seed", "7"],
            ["plot", str(experiment_dir), "--out", "sweep.png"],
        ],
        cwd=tmp_path,
    )
    for process in (best, from_export, plot):
        assert process.returncode == 0, process.stderr
        assert_quiet(process)
    lines = from_export.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [["episode", str(i)] for i in (1, 2, 3)]
    assert lines[3].startswith("mean return ") and lines[3].endswith("over 3 episodes")
    png = Path(plot.stdout.strip())
    assert png == tmp_path / "sweep.png"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    # The checkpoint the export came from: the same module, the same seeded episodes.
    assert cli("evaluate", checkpoint, "--episodes", "3", "--seed", "7") == (
        0,
        from_export.stdout,
        "",
    )


def test_tune_resume_of_a_finished_sweep_ranks_its_trials(cli_sweep, cli):
    _, experiment_dir = cli_sweep
    status, out, _ = cli("tune", str(experiment_dir), "--resume")
    assert status == 0
    assert len(re.findall(r"^ +[12] +[\d.]+ +\d", out, re.MULTILINE)) == 2
    assert len(list(experiment_dir.glob("PPO_*"))) == 2


def test_train_prints_a_line_per_iteration_and_saves_a_checkpoint(tmp_path):
    process = run(
        "train",
        "--env",
        "CartPole-v1",
        "--config",
        TINY_CONFIG_JSON,
        "--stop",
        "training_iteration=3",
        "--seed",
        "2",
        "--checkpoint-dir",
        "run",
        cwd=tmp_path,
    )
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [["iter", str(i)] for i in (1, 2, 3)]
    assert all(re.search(r"steps +[\d,]+ +return +[\d.]+ +steps/s", line) for line in lines[:3])
    assert lines[3] == f"checkpoint: {tmp_path / 'run' / 'checkpoint'}"
    assert (tmp_path / "run" / "checkpoint" / "algorithm_state.json").is_file()
    assert_quiet(process)


def test_list_shows_each_field_with_default_and_doc(tmp_path):
    process = run("list", "PPO", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith("PPO  (PPOConfig)")
    assert re.search(r"^    lr +=.+Learning rate", process.stdout, re.MULTILINE)
    assert "  .training()" in process.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(cli, command):
    status, out, _ = cli(command, "--help")
    assert status == 0
    assert out.startswith(f"usage: tunerl {command}")


def test_misspelled_option_and_unknown_env_exit_2_with_a_suggestion(tmp_path):
    cases = {
        ("train", "--env", "CartPole-v1", "--stpo=training_iteration=1"): (
            "tunerl train: error: unrecognized arguments: --stpo=training_iteration=1 "
            "(did you mean --stop?)"
        ),
        ("train", "--env", "CartPol-v1"): "Did you mean 'CartPole-v1'",
    }
    for (args, expected), process in zip(
        cases.items(), run_all([list(args) for args in cases], cwd=tmp_path)
    ):
        assert process.returncode == 2, (args, process.stderr)
        assert process.stdout == ""
        (line,) = process.stderr.strip().splitlines()
        assert expected in line, (args, line)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("train", "--algo", "PP0", "--env", "CartPole-v1"), "Did you mean 'PPO'?"),
        (("train", "--env", "CartPole-v1", "--config", '{"lrr": 1}'), "Did you mean 'lr'?"),
        (("train", "--env", "CartPole-v1", "--stop", "x"), "expected KEY=VALUE"),
        (("trian",), "(did you mean 'train'?)"),
        (("tune", "bad.yaml"), "space.lrr: unknown config field 'lrr'. Did you mean 'lr'?"),
        (("tune", "bad.yaml", "--scheduler", "pbx"), "(did you mean 'pbt'?)"),
        (("tune", "missing.yaml"), "missing.yaml: no such file"),
        (("tune", ".", "--resume"), "was not started by tunerl's run_sweep"),
        (("tune", "."), "is a folder: to continue the sweep in it, add --resume"),
        (("best", "missing_dir"), "does not exist"),
        (("evaluate", "missing_dir"), "does not exist"),
    ],
)
def test_mistakes_exit_2_with_one_line_naming_the_closest_valid_name(
    cli, tmp_path, monkeypatch, args, expected
):
    bad_space = {"algo": "PPO", "env": "CartPole-v1", "space": {"lrr": {"uniform": [0.1, 0.2]}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad_space))
    monkeypatch.chdir(tmp_path)
    status, out, err = cli(*args)
    assert status == 2
    assert out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("tunerl") and expected in line, line


# ---------------------------------------------------------- RLlib's spellings (seed 000)
def test_rllibs_command_line_runs(tmp_path):
    """`rllib train --run APPO --env CartPole-v0 --torch` with a JSON --stop, and the
    --framework spelling with a JSON --config."""
    stop = '{"training_iteration": 1}'
    processes = run_all(
        [
            ["train", "--run", "APPO", "--env", "CartPole-v0", "--torch", "--stop", stop],
            [
                "train",
                "--run",
                "PPO",
                "--env",
                "CartPole-v1",
                "--framework",
                "torch",
                "--config",
                json.dumps({**TINY_CONFIG, "framework": "torch"}),
                "--stop",
                stop,
            ],
        ],
        cwd=tmp_path,
    )
    for process, name in zip(processes, ("APPO_CartPole-v0", "PPO_CartPole-v1")):
        assert process.returncode == 0, process.stderr
        assert process.stdout.splitlines()[0].startswith("iter    1 ")
        assert (tmp_path / "results" / name / "checkpoint" / "MANIFEST.json").is_file()
        assert_quiet(process)


# ------------------------------------------------------ a run that misses its target
def test_train_that_ends_at_a_cap_without_its_target_says_so_and_exits_1(cli, tmp_path):
    status, out, err = cli(
        "train",
        "--env",
        "CartPole-v1",
        "--config",
        TINY_CONFIG_JSON,
        "--stop",
        "episode_reward_mean=10000",
        "--stop",
        "num_env_steps_sampled_lifetime=500",
        "--checkpoint-dir",
        str(tmp_path / "run"),
    )
    assert status == 1
    assert (tmp_path / "run" / "checkpoint" / "MANIFEST.json").is_file()  # the work is kept
    warning, summary = err.strip().splitlines()
    assert warning.startswith("tunerl: warning: --stop episode_reward_mean is RLlib's name")
    last_return = float(re.findall(r"return +([\d.]+)", out)[-1])  # printed with 2 decimals
    pattern = (
        r"tunerl: stopped at the 500 env-step cap with episode_return_mean ([\d.]+); "
        r"the target env_runners/episode_return_mean=10000 was not reached\."
    )
    match = re.fullmatch(pattern, summary)
    assert match, summary
    # The summary rounds the same return to 1 decimal (rounding 20.65 again could differ).
    assert abs(float(match.group(1)) - last_return) <= 0.055


def test_train_that_reaches_its_target_exits_0(cli, tmp_path):
    status, _, err = cli(
        "train",
        "--env",
        "CartPole-v1",
        "--config",
        TINY_CONFIG_JSON,
        "--stop",
        '{"env_runners/episode_return_mean": 1, "training_iteration": 5}',
        "--checkpoint-dir",
        str(tmp_path / "run"),
    )
    assert (status, err) == (0, "")


# ----------------------------------------------- user errors: one paragraph, status 2
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("train", "--env", "CartPole-v1", "--config", "bad_config.yaml"), "bad_config.yaml:2:"),
        (
            ("train", "--algo", "DQN", "--env", "MountainCarContinuous-v0"),
            "DQN needs a Discrete action space",
        ),
        (("evaluate", "module"), "is a module folder"),
        (("evaluate", "bad_config.yaml"), "bad_config.yaml"),
        (("train", "--env", "CartPole-v1", "--stop", "training_iteration=nan"), "finite number"),
        (("train", "--env", "CartPole-v1", "--stop", '{"time_total_s": Infinity}'), "finite"),
        (
            ("train", "--env", "CartPole-v1", "--stop", "env_runners/episode_return_men=1"),
            "Did you mean 'env_runners/episode_return_mean'?",
        ),
        (
            (
                "train",
                "--env",
                "CartPole-v1",
                "--config",
                '{"model_config": {"fcnet_hidden": [8]}}',
            ),
            "Did you mean 'fcnet_hiddens'?",
        ),
        (
            (
                "train",
                "--env",
                "CartPole-v1",
                "--config",
                '{"model_config": {"fcnet_hiddens": [-1]}}',
            ),
            "list of positive integers",
        ),
        (
            (
                "train",
                "--env",
                "CartPole-v1",
                "--config",
                '{"model_config": {"fcnet_hiddens": "64"}}',
            ),
            "list of positive integers",
        ),
        (("train", "--env", "CartPole-v1", "--config", '{"grad_clip": Infinity}'), "inf is not"),
        (("train", "--env", "CartPole-v1", "--framework", "tf2"), "torch only"),
        (("train", "--env", "CartPole-v1", "--config", '{"framework": "tf"}'), "torch only"),
        (("tune", "nested_typo.yaml"), "space.model_config/fcnet_hidden.choice: "),
        (("tune", "bad_config.yaml"), "bad_config.yaml:2:3: not valid YAML"),
    ],
)
def test_user_errors_exit_2_with_a_short_message_and_no_traceback(
    cli, tmp_path, monkeypatch, args, expected
):
    (tmp_path / "bad_config.yaml").write_text("lr: [1,\n  - 2\n")
    nested = {
        "algo": "PPO",
        "env": "CartPole-v1",
        "space": {"model_config/fcnet_hidden": {"choice": [[8], [16]]}},
    }
    (tmp_path / "nested_typo.yaml").write_text(yaml.safe_dump(nested))
    DefaultRLModule(*_cartpole_spaces()).save_to_path(tmp_path / "module")
    monkeypatch.chdir(tmp_path)
    status, out, err = cli(*args)
    assert status == 2, err
    assert out == ""
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3, err
    assert err.startswith("tunerl") and expected in err, err


def _cartpole_spaces():
    env = gym.make("CartPole-v1")
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
