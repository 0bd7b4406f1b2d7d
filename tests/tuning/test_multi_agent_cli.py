"""The command line on a multi-agent task, as users run it: `tunerl train` with policies and a
mapping given as data (`--config`), a checkpoint with a folder per module, and `tunerl
evaluate --module-id` acting with one module of it."""

from __future__ import annotations

import json
from pathlib import Path

from .test_cli import run

CONFIG = {
    "env_config": {"num_agents": 2},
    "policies": ["p0", "p1"],
    # A mapping as data: agent 0 -> p0, agent 1 -> p1 (JSON keys are strings).
    "policy_mapping_fn": {"0": "p0", "1": "p1"},
    "train_batch_size_per_learner": 256,
    "minibatch_size": 64,
    "num_epochs": 1,
    "model_config": {"fcnet_hiddens": [16]},
}


def test_train_a_two_module_config_and_evaluate_one_module(tmp_path: Path):
    trained = run(
        "train",
        "--env",
        "MultiAgentCartPole",
        "--config",
        json.dumps(CONFIG),
        "--stop",
        "training_iteration=2",
        "--seed",
        "1",
        "--checkpoint-dir",
        "run",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    checkpoint = tmp_path / "run" / "checkpoint"
    modules = checkpoint / "learner_group" / "learner" / "rl_module"
    assert sorted(p.name for p in modules.iterdir()) == ["p0", "p1"]
    # The mapping was data, so the checkpoint holds it and restores without code.
    state = json.loads((checkpoint / "algorithm_state.json").read_text())
    assert state["config"]["policy_mapping_fn"] == {"0": "p0", "1": "p1"}
    evaluated = run("evaluate", str(checkpoint), "--episodes", "3", "--seed", "0", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    lines = evaluated.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [["episode", str(i)] for i in (1, 2, 3)]
    assert lines[3].startswith("mean return") and "over 3 episodes" in lines[3]
    assert lines[4].startswith("per module: p0 ") and ", p1 " in lines[4]
