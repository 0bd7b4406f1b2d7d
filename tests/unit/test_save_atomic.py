"""Saves lose nothing (issue 12, items 5-6): `save_to_path` never replaces a folder it did
not write, and a save killed at any moment leaves a complete checkpoint at its path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tunerl import CheckpointError, RLModule
from tunerl.core import checkpoint_io


def user_files(folder: Path) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "run.csv").write_text("1,2,3")
    return {"notes.txt": "mine", "data/run.csv": "1,2,3"}


def assert_kept(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        assert (folder / name).read_text() == text, name


@pytest.mark.parametrize("where", [".", "results"])
def test_save_to_path_refuses_a_folder_of_user_files_and_keeps_every_file(
    tiny_config, build, discrete_module, tmp_path, monkeypatch, where
):
    monkeypatch.chdir(tmp_path)
    files = user_files(tmp_path / where)
    algo = build(tiny_config())
    for save in (algo.save_to_path, discrete_module.save_to_path):
        with pytest.raises(CheckpointError, match="is not a tunerl checkpoint"):
            save(where)
        assert_kept(tmp_path / where, files)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_save_to_path_refuses_a_file_and_a_checkpoint_with_a_user_file_added(
    discrete_module, tmp_path
):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(CheckpointError, match="is not a tunerl checkpoint"):
        discrete_module.save_to_path(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"
    path = Path(discrete_module.save_to_path(tmp_path / "module"))
    (path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="is not a tunerl checkpoint"):
        discrete_module.save_to_path(path)
    assert (path / "notes.txt").read_text() == "mine"


def test_overwriting_a_checkpoint_and_an_empty_folder_is_allowed(tiny_config, build, tmp_path):
    algo = build(tiny_config())
    (tmp_path / "empty").mkdir()
    algo.save_to_path(tmp_path / "empty")
    path = Path(algo.save_to_path(tmp_path / "checkpoint"))
    algo.train()
    assert algo.save_to_path(path) == str(path)
    assert json.loads((path / "algorithm_state.json").read_text())["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "empty"]


def test_leftovers_of_killed_saves_are_removed_by_the_next_save(discrete_module, tmp_path):
    path = Path(discrete_module.save_to_path(tmp_path / "module"))
    for kind in ("tmp", "new", "old"):
        (tmp_path / f".module.{kind}-0123abcd").mkdir()
        (tmp_path / f".module.{kind}-0123abcd" / "half.pt").write_bytes(b"x")
    (tmp_path / ".module.notes").mkdir()  # not a save's: left alone
    discrete_module.save_to_path(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".module.notes", "module"]


def test_a_save_killed_between_its_two_renames_is_recovered_by_the_next_reader(
    discrete_module, tmp_path
):
    # Where the system cannot exchange two folders, a save renames the old checkpoint aside
    # and the new one in. This is the folder as a kill between the two leaves it.
    old = Path(discrete_module.save_to_path(tmp_path / "old"))
    with torch.no_grad():
        discrete_module.pi_head.weight.add_(1.0)
    new = Path(discrete_module.save_to_path(tmp_path / "new"))
    old.rename(tmp_path / ".module.old-0123abcd")
    new.rename(tmp_path / ".module.new-0123abcd")

    module = RLModule.from_checkpoint(tmp_path / "module")
    assert torch.equal(module.pi_head.weight, discrete_module.pi_head.weight)
    discrete_module.save_to_path(tmp_path / "module")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["module"]


def test_the_two_rename_fallback_replaces_a_checkpoint(discrete_module, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_io, "_exchange", lambda first, second: False)
    path = Path(discrete_module.save_to_path(tmp_path / "module"))
    with torch.no_grad():
        discrete_module.pi_head.weight.add_(1.0)
    discrete_module.save_to_path(path)
    module = RLModule.from_checkpoint(path)
    assert torch.equal(module.pi_head.weight, discrete_module.pi_head.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["module"]


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, no cleanup."""


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two_renames"])
def test_a_save_stopped_before_any_step_of_its_commit_leaves_a_checkpoint(
    discrete_module, tmp_path, monkeypatch, exchange
):
    import shutil

    path = Path(discrete_module.save_to_path(tmp_path / "module"))
    on_disk = float(discrete_module.pi_head.bias.detach()[0])
    # Each round stops the save at the n-th file-system step of its commit (rename, exchange,
    # delete), for every n until a save runs through.
    for stop_at in range(1, 8):
        with torch.no_grad():
            discrete_module.pi_head.bias.fill_(stop_at)
        steps_taken = []

        def step(real, steps_taken=steps_taken, stop_at=stop_at):
            def stopped_or_real(*args, **kwargs):
                steps_taken.append(real)
                if len(steps_taken) == stop_at:
                    raise Killed
                return real(*args, **kwargs)

            return stopped_or_real

        exchange_step = checkpoint_io._exchange if exchange else lambda first, second: False
        with monkeypatch.context() as patch:
            for name in ("rename", "replace"):
                patch.setattr(os, name, step(getattr(os, name)))
            patch.setattr(shutil, "rmtree", step(shutil.rmtree))
            patch.setattr(checkpoint_io, "_exchange", step(exchange_step))
            try:
                discrete_module.save_to_path(path)
            except Killed:
                pass
        loaded = float(RLModule.from_checkpoint(path).pi_head.bias.detach()[0])
        assert loaded in (on_disk, stop_at)  # the old checkpoint, or the new one
        on_disk = loaded
    assert on_disk == 7  # the last save ran through


# A helper process imports tunerl once, then forks a child per round that saves in a loop
# (each save with other weights) until the helper kills it with SIGKILL after a random
# delay; the helper then loads the path. Forking keeps 40 kills to seconds.
KILL_LOOP = textwrap.dedent(
    """
    import json, os, random, signal, sys, time
    import torch
    torch.set_num_threads(1)
    from tunerl import PPO, PPOConfig, RLModule
    from tunerl.core import checkpoint_io
    from tunerl.core.rl_module import DefaultRLModule
    import gymnasium as gym, numpy as np

    root = sys.argv[1]
    rounds, algo_rounds, seed = (int(arg) for arg in sys.argv[2:5])
    rng = random.Random(seed)
    module = DefaultRLModule(gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.Discrete(2),
                             {"fcnet_hiddens": [64, 64]})
    algo = (PPOConfig().environment("CartPole-v1").env_runners(num_envs_per_env_runner=1)
            .training(train_batch_size_per_learner=64, minibatch_size=32, num_epochs=1)
            .rl_module(model_config={"fcnet_hiddens": [8]}).debugging(seed=0).build_algo())
    report = []

    def save_forever(target, save, fallback):
        if fallback:
            checkpoint_io._exchange = lambda first, second: False
        value = 0
        while True:
            value += 1
            with torch.no_grad():
                module.pi_head.bias.fill_(value)
            save(target, value)
            os.write(1, b"")

    def save_module(target, value):
        module.save_to_path(target)

    def save_algo(target, value):
        algo.counters["num_env_steps_sampled_lifetime"] = value
        algo.save_to_path(target)

    for round_index in range(rounds + algo_rounds):
        is_algo = round_index >= rounds
        target = os.path.join(root, "algo" if is_algo else "module")
        save = save_algo if is_algo else save_module
        fallback = round_index % 2 == 1
        if not os.path.exists(target):
            save(target, 0)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            os.write(write_fd, b"1")
            try:
                save_forever(target, save, fallback)
            finally:
                os._exit(1)
        os.close(write_fd)
        os.read(read_fd, 1)  # the child runs
        time.sleep(rng.uniform(0.0, 0.15 if is_algo else 0.05))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        if is_algo:
            with checkpoint_io.CheckpointReader(target) as reader:
                counters = reader.json("algorithm_state.json")["counters"]
            value = counters["num_env_steps_sampled_lifetime"]
            algo.restore_from_path(target)
        else:
            value = float(RLModule.from_checkpoint(target).pi_head.bias[0])
        report.append({"kind": "algo" if is_algo else "module", "value": value,
                       "siblings": sorted(os.listdir(root))})
    print(json.dumps(report))
    """
)


def test_a_save_killed_at_random_moments_always_leaves_a_loadable_checkpoint(tmp_path):
    script = tmp_path / "kill_loop.py"
    script.write_text(KILL_LOOP)
    root = tmp_path / "saves"
    root.mkdir()
    run = subprocess.run(
        [sys.executable, str(script), str(root), "40", "6", "12"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(report) == 46
    # Every round found a complete checkpoint (the loads above would have raised), and the
    # kills landed mid-loop: most rounds had saved new weights before the kill.
    assert sum(entry["value"] > 0 for entry in report) > len(report) // 2
