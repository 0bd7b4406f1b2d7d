"""A trial's checkpoint out of its sweep: export of every module of the best checkpoint, and
evaluation of any module of a checkpoint, of an export, or of an older single-module export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tunerl import RLModule
from tunerl.core import checkpoint_io, checkpoint_layout
from tunerl.core.rl_module import MultiRLModule
from tunerl.tuning import evaluate_checkpoint, export_best, export_checkpoint, rank_trials

SECOND = "second"


@pytest.fixture
def best_checkpoint(grid_sweep, tmp_path) -> Path:
    """A copy of the sweep's best checkpoint (the sweep's own folders stay as Tune wrote them)."""
    return Path(shutil.copytree(rank_trials(grid_sweep)[0].checkpoint, tmp_path / "best"))


def add_module(checkpoint: Path, module_id: str, module: RLModule) -> None:
    """Writes `module` as one more module of `checkpoint`, under a re-written manifest."""
    module.save_to_path(checkpoint / checkpoint_layout.module_dir(module_id))
    checkpoint_io.write_manifest(checkpoint)


def other_weights(checkpoint: Path) -> RLModule:
    """The checkpoint's module with every weight changed (so its actions differ)."""
    module = RLModule.from_checkpoint(checkpoint / checkpoint_layout.module_dir("default_policy"))
    weights = dict(module.named_parameters())
    state = module.get_state()
    module.set_state({name: -2.0 * v if name in weights else v for name, v in state.items()})
    return module


def test_export_best_writes_a_module_folder_that_loads_on_its_own(grid_sweep, tmp_path):
    out = export_best(grid_sweep, tmp_path / "best")
    assert sorted(p.name for p in out.iterdir()) == [
        "MANIFEST.json",
        "config.json",
        "rl_module",
        "scores.json",
    ]
    module = RLModule.from_checkpoint(out / "rl_module" / "default_policy")
    logits = module.forward_inference({"obs": torch.zeros(3, 4)})["action_dist_inputs"]
    assert logits.shape == (3, 2)
    config = json.loads((out / "config.json").read_text())
    scores = json.loads((out / "scores.json").read_text())
    best = rank_trials(grid_sweep)[0]
    assert config["config"]["lr"] == best.config["lr"] and config["algo_class"].endswith(":PPO")
    assert scores["best"]["trial_id"] == best.trial_id
    assert [entry["trial_id"] for entry in scores["ranking"]][0] == best.trial_id
    # Exporting again replaces the earlier export; another folder is never replaced.
    assert export_best(grid_sweep, out) == out
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not a tunerl checkpoint"):
        export_best(grid_sweep, precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_evaluate_checkpoint_runs_seeded_episodes_from_a_checkpoint_or_an_export(
    grid_sweep, tmp_path
):
    checkpoint = rank_trials(grid_sweep)[0].checkpoint
    first = evaluate_checkpoint(checkpoint, episodes=3, seed=5)
    again = evaluate_checkpoint(checkpoint, episodes=3, seed=5)
    assert len(first["episode_returns"]) == 3
    assert first == again
    assert first["mean"] == pytest.approx(sum(first["episode_returns"]) / 3)
    exported = evaluate_checkpoint(export_best(grid_sweep, tmp_path / "best"), episodes=3, seed=5)
    assert exported == first
    with pytest.raises(ValueError, match="episodes=0 must be at least 1"):
        evaluate_checkpoint(checkpoint, episodes=0)


def test_every_module_of_a_two_module_checkpoint_is_exported_and_loads_alone(
    best_checkpoint, tmp_path
):
    second = other_weights(best_checkpoint)
    add_module(best_checkpoint, SECOND, second)
    out = export_checkpoint(best_checkpoint, tmp_path / "export")
    assert sorted(p.name for p in (out / "rl_module").iterdir()) == ["default_policy", SECOND]
    assert not (out / "scores.json").exists()  # only export_best knows how it was chosen
    for module_id in ("default_policy", SECOND):
        inside = RLModule.from_checkpoint(best_checkpoint / checkpoint_layout.module_dir(module_id))
        alone = RLModule.from_checkpoint(out / "rl_module" / module_id)
        for name, value in inside.get_state().items():
            assert torch.equal(alone.get_state()[name], value), (module_id, name)
    both = MultiRLModule.from_checkpoint(out / "rl_module")
    assert both.keys() == ["default_policy", SECOND]
    for name, value in second.get_state().items():
        assert torch.equal(both[SECOND].get_state()[name], value)


def test_evaluate_checkpoint_runs_the_module_it_is_given_and_names_the_ids_present(
    best_checkpoint, tmp_path
):
    second = other_weights(best_checkpoint)
    # The same weights as the only module of another checkpoint: what module SECOND must do.
    alone = Path(shutil.copytree(best_checkpoint, tmp_path / "alone"))
    shutil.rmtree(alone / checkpoint_layout.module_dir("default_policy"))
    add_module(alone, "default_policy", second)
    add_module(best_checkpoint, SECOND, second)
    expected = evaluate_checkpoint(alone, episodes=3, seed=5)
    assert expected != evaluate_checkpoint(best_checkpoint, episodes=3, seed=5)  # it acts otherwise
    export = export_checkpoint(best_checkpoint, tmp_path / "export")
    for folder in (best_checkpoint, export):
        assert evaluate_checkpoint(folder, episodes=3, seed=5, module_id=SECOND) == expected
    with pytest.raises(
        ValueError, match=r"no module 'secnd'; it holds \['default_policy', 'second'\]"
    ):
        evaluate_checkpoint(export, episodes=1, module_id="secnd")


def test_an_export_with_the_older_single_module_folder_still_evaluates(best_checkpoint, tmp_path):
    old = tmp_path / "old_export"
    shutil.copytree(
        best_checkpoint / checkpoint_layout.module_dir("default_policy"), old / "module"
    )
    state = json.loads((best_checkpoint / checkpoint_layout.STATE_FILE).read_text())
    config = {"algo_class": state["algo_class"], "config": state["config"]}
    (old / "config.json").write_text(json.dumps(config))
    checkpoint_io.write_manifest(old)
    expected = evaluate_checkpoint(best_checkpoint, episodes=3, seed=5)
    assert evaluate_checkpoint(old, episodes=3, seed=5) == expected
    with pytest.raises(ValueError, match=r"it holds \['default_policy'\]"):
        evaluate_checkpoint(old, episodes=1, module_id=SECOND)
