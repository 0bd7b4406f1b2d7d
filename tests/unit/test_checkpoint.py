"""Checkpoints: exact round trips, identical continuation, refusal of altered or crafted
files, atomic saves, and modules that load without the algorithm."""

from __future__ import annotations

import json
import pathlib
import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from tunerl import (
    PPO,
    Algorithm,
    CheckpointError,
    ConfigError,
    DefaultRLModule,
    RLModule,
    RLModuleSpec,
)
from tunerl.core import checkpoint_io
from tunerl.core import checkpoint_layout as layout
from tunerl.core import columns as c
from tunerl.core.rl_module import MODULE_STATE_FILE

MODULE_DIR = layout.module_dir(c.DEFAULT_MODULE_ID)
MODULE_STATE = MODULE_DIR / MODULE_STATE_FILE
LEARNER_STATE = layout.LEARNER_DIR / layout.LEARNER_TENSORS_FILE
ALGORITHM_STATE = Path(layout.STATE_FILE)


def assert_same(actual: Any, expected: Any, where: str = "state") -> None:
    """Equal bit for bit: tensors with torch.equal (and the same dtype), containers
    recursively, everything else with ==."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), where
        assert actual.dtype == expected.dtype, where
        assert torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def snapshot(algo: Algorithm) -> dict[str, Any]:
    """Everything a restore must bring back. The algorithm's own seed stream is not here: a
    restore reads it back and at once draws the runners' new seeds from it, so it is checked
    in the checkpoint file, and its use by the two-restores test."""
    learner_state = algo.learner.get_state()
    return {
        "module": learner_state["module"],  # {module_id: weights}
        "optimizers": learner_state["optimizers"],
        "tensors": learner_state["tensors"],
        "learner_json": learner_state["json"],  # includes the learner's RNG and kl_coeff
        "counters": dict(algo.counters),
        "iteration": algo.iteration,
        "episode_returns": list(algo._episode_stats.returns),
        "episode_lengths": list(algo._episode_stats.lengths),
    }


def runner_weights(algo: Algorithm) -> dict[str, dict[str, torch.Tensor]]:
    """The local env runner's weights, `{module_id: weights}`."""
    (weights,) = algo.env_runner_group.foreach_env_runner(lambda runner: runner.get_weights())
    return weights


def default_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of `default_policy` in a snapshot's `{module_id: weights}`."""
    return state["module"][c.DEFAULT_MODULE_ID]


@pytest.fixture
def trained(tiny_config, build) -> Algorithm:
    """Two iterations with the adaptive KL penalty on, so every kind of state has moved."""
    algo = build(tiny_config(use_kl_loss=True, num_epochs=2))
    algo.train()
    algo.train()
    return algo


@pytest.fixture
def checkpoint(trained, tmp_path) -> Path:
    return Path(trained.save_to_path(tmp_path / "checkpoint"))


# ---------------------------------------------------------------------- round trips
def test_restore_from_path_brings_back_every_state_bit_for_bit(
    trained, tiny_config, build, tmp_path
):
    torch_rng = torch.get_rng_state()
    expected = snapshot(trained)
    # the KL coefficient has adapted
    assert expected["learner_json"]["kl_coeff"][c.DEFAULT_MODULE_ID] != trained.config.kl_coeff
    assert expected["counters"]["num_env_steps_sampled_lifetime"] > 0

    seed_stream = trained._rng.bit_generator.state
    path = trained.save_to_path(tmp_path / "checkpoint")
    assert path == str((tmp_path / "checkpoint").absolute())
    stored = json.loads((Path(path) / ALGORITHM_STATE).read_text())
    assert stored["rng"] == seed_stream

    other = build(tiny_config(seed=123, use_kl_loss=True, num_epochs=2))
    assert not torch.equal(
        other.get_module().get_state()["pi_head.weight"],
        default_weights(expected)["pi_head.weight"],
    )
    other.restore_from_path(path)

    assert_same(snapshot(other), expected)
    assert torch.equal(torch.get_rng_state(), torch_rng)
    assert_same(runner_weights(other), expected["module"], "runner weights")


def test_from_checkpoint_rebuilds_the_algorithm_with_its_config(trained, checkpoint):
    expected = snapshot(trained)
    for loader in (PPO.from_checkpoint, Algorithm.from_checkpoint):
        restored = loader(checkpoint)
        try:
            assert type(restored) is PPO
            assert restored.config == trained.config
            assert_same(snapshot(restored), expected)
        finally:
            restored.stop()


def test_save_returns_a_result_whose_checkpoint_path_loads(trained):
    expected = snapshot(trained)
    result = trained.save()
    restored = PPO.from_checkpoint(result.checkpoint.path)
    try:
        assert_same(snapshot(restored), expected)
    finally:
        restored.stop()


def as_tunerl_0_1_checkpoint(checkpoint: Path) -> None:
    """Rewrites a checkpoint's learner files as tunerl 0.1 wrote them (one module): the
    optimizer state under "optimizer", and one number for the KL coefficient."""
    learner_dir = checkpoint / layout.LEARNER_DIR
    tensors = torch.load(learner_dir / layout.LEARNER_TENSORS_FILE, weights_only=True)
    (optimizer,) = tensors["optimizers"][c.DEFAULT_MODULE_ID].values()
    torch.save({"optimizer": optimizer}, learner_dir / layout.LEARNER_TENSORS_FILE)
    learner_json = json.loads((learner_dir / layout.LEARNER_JSON_FILE).read_text())
    learner_json["kl_coeff"] = learner_json["kl_coeff"][c.DEFAULT_MODULE_ID]
    (learner_dir / layout.LEARNER_JSON_FILE).write_text(json.dumps(learner_json))
    checkpoint_io.write_manifest(checkpoint)


def test_a_tunerl_0_1_checkpoint_restores_as_its_one_module(trained, checkpoint):
    expected = snapshot(trained)
    as_tunerl_0_1_checkpoint(checkpoint)
    restored = PPO.from_checkpoint(checkpoint)
    try:
        assert_same(snapshot(restored), expected)
    finally:
        restored.stop()


def test_save_to_path_without_a_path_writes_into_the_logdir(trained):
    path = Path(trained.save_to_path())
    assert path.parent == Path(trained.logdir).absolute()
    assert path.name == "checkpoint_000002"
    checkpoint_io.verify_manifest(path)


# ------------------------------------------------------------ altered checkpoints
def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_counters(path: Path) -> None:
    state = json.loads(path.read_text())
    state["counters"]["num_env_steps_sampled_lifetime"] += 1
    path.write_text(json.dumps(state))


@pytest.mark.parametrize(
    "relative, alter",
    [
        (MODULE_STATE, flip_a_byte),
        (LEARNER_STATE, flip_a_byte),
        (Path("rng_state.pt"), flip_a_byte),
        (ALGORITHM_STATE, edit_counters),
    ],
    ids=["module_state", "learner_state", "rng_state", "algorithm_state"],
)
def test_altered_file_is_refused(checkpoint, tiny_config, build, relative, alter):
    alter(checkpoint / relative)
    other = build(tiny_config(seed=5, use_kl_loss=True, num_epochs=2))
    before = snapshot(other)

    with pytest.raises(CheckpointError, match="was changed after it was written") as error:
        other.restore_from_path(checkpoint)
    assert relative.name in str(error.value)
    with pytest.raises(CheckpointError):
        PPO.from_checkpoint(checkpoint)
    # A refused checkpoint is refused before anything of it is loaded.
    assert_same(snapshot(other), before)


def test_altered_module_state_is_refused_by_rl_module_from_checkpoint(checkpoint):
    flip_a_byte(checkpoint / MODULE_STATE)
    with pytest.raises(CheckpointError, match="module_state.pt"):
        RLModule.from_checkpoint(checkpoint / MODULE_DIR)


def test_missing_manifest_is_refused(checkpoint, trained):
    (checkpoint / checkpoint_io.MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="has no MANIFEST.json"):
        PPO.from_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match="has no MANIFEST.json"):
        trained.restore_from_path(checkpoint)


def test_missing_file_is_refused(checkpoint):
    (checkpoint / LEARNER_STATE).unlink()
    with pytest.raises(
        CheckpointError, match="learner_state.pt listed in MANIFEST.json is missing"
    ):
        PPO.from_checkpoint(checkpoint)


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        PPO.from_checkpoint(tmp_path / "nowhere")


class WritesMarker:
    """Unpickling this runs code: it writes `marker`."""

    def __init__(self, marker: Path):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "code ran"))


def write_with_torch_save(path: Path, payload: Any) -> None:
    torch.save({"pi_head.weight": payload}, path)


def write_with_pickle(path: Path, payload: Any) -> None:
    path.write_bytes(pickle.dumps({"pi_head.weight": payload}))


UNSAFE_LOADERS = {
    write_with_torch_save: lambda path: torch.load(path, weights_only=False),
    write_with_pickle: lambda path: pickle.loads(path.read_bytes()),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("write", [write_with_torch_save, write_with_pickle])
@pytest.mark.parametrize("relative", [MODULE_STATE, LEARNER_STATE], ids=["module", "learner"])
def test_crafted_pickle_with_a_valid_manifest_is_refused_without_running_it(
    checkpoint, tmp_path, write, relative
):
    # The payload really runs code when unpickled the unsafe way.
    probe_marker = tmp_path / "probe_marker"
    write(tmp_path / "probe.pt", WritesMarker(probe_marker))
    UNSAFE_LOADERS[write](tmp_path / "probe.pt")
    assert probe_marker.exists()

    marker = tmp_path / "marker"
    write(checkpoint / relative, WritesMarker(marker))
    checkpoint_io.write_manifest(checkpoint / MODULE_DIR)
    checkpoint_io.write_manifest(checkpoint)
    checkpoint_io.verify_manifest(checkpoint)  # the manifest no longer protects

    with pytest.raises(CheckpointError, match="does not hold only tensors"):
        PPO.from_checkpoint(checkpoint)
    if relative == MODULE_STATE:
        with pytest.raises(CheckpointError, match="does not hold only tensors"):
            RLModule.from_checkpoint(checkpoint / MODULE_DIR)
    assert not marker.exists()


# ------------------------------------------------------------------------ atomic saves
def test_failed_save_leaves_the_previous_checkpoint_loadable(trained, tmp_path, monkeypatch):
    path = tmp_path / "checkpoint"
    trained.save_to_path(path)
    saved = snapshot(trained)
    trained.train()
    assert not torch.equal(
        trained.get_module().get_state()["pi_head.weight"], default_weights(saved)["pi_head.weight"]
    )

    real_write_manifest = checkpoint_io.write_manifest

    def crash_before_the_top_manifest(directory):
        if (Path(directory) / ALGORITHM_STATE).exists():
            raise OSError("disk full")
        real_write_manifest(directory)

    monkeypatch.setattr(checkpoint_io, "write_manifest", crash_before_the_top_manifest)
    with pytest.raises(OSError, match="disk full"):
        trained.save_to_path(path)
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no leftovers
    restored = PPO.from_checkpoint(path)
    try:
        assert_same(snapshot(restored), saved)
    finally:
        restored.stop()


def test_failed_first_save_leaves_nothing_at_the_path(trained, tmp_path, monkeypatch):
    def crash(directory):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_io, "write_manifest", crash)
    with pytest.raises(OSError):
        trained.save_to_path(tmp_path / "checkpoint")
    assert list(tmp_path.iterdir()) == []


def test_env_given_as_a_lambda_cannot_be_checkpointed_and_nothing_is_written(
    tiny_config, build, tmp_path
):
    algo = build(tiny_config(env=lambda env_config: gym.make("CartPole-v1")))
    with pytest.raises(ConfigError, match="register_env"):
        algo.save_to_path(tmp_path / "checkpoint")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- modules on their own
def random_obs(n: int = 32) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    obs = rng.uniform([-2.4, -3, -0.2, -3], [2.4, 3, 0.2, 3], size=(n, 4)).astype(np.float32)
    return {c.OBS: torch.from_numpy(obs)}


def test_rl_module_loads_from_the_algorithm_checkpoint_without_the_algorithm(trained, checkpoint):
    module = RLModule.from_checkpoint(checkpoint / MODULE_DIR)

    assert type(module) is DefaultRLModule
    assert not module.training
    assert module.observation_space == trained.get_module().observation_space
    assert module.action_space == trained.get_module().action_space
    assert_same(module.get_state(), trained.get_module().get_state())
    obs = random_obs()
    ours = module.forward_inference(obs)
    theirs = trained.get_module().forward_inference(obs)
    assert_same(ours, theirs)


class TinyModule(RLModule):
    """The README's custom module: one network for logits and value."""

    def setup(self):
        self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))

    def _forward(self, batch):
        out = self.net(batch[c.OBS])
        return {c.ACTION_DIST_INPUTS: out[:, :2], c.VF_PREDS: out[:, 2]}


def test_custom_module_trains_and_round_trips(tiny_config, build, tmp_path):
    spec = RLModuleSpec(module_class=TinyModule, model_config={"width": 32})
    algo = build(tiny_config().rl_module(rl_module_spec=spec))
    algo.train()
    path = Path(algo.save_to_path(tmp_path / "checkpoint"))

    restored = PPO.from_checkpoint(path)
    try:
        assert type(restored.get_module()) is TinyModule
        assert restored.config.rl_module_spec.module_class is TinyModule
        assert restored.get_module().model_config["width"] == 32
        assert_same(snapshot(restored), snapshot(algo))
    finally:
        restored.stop()
    module = RLModule.from_checkpoint(path / MODULE_DIR)
    assert type(module) is TinyModule
    obs = random_obs()
    assert_same(module.forward_inference(obs), algo.get_module().forward_inference(obs))


def test_rl_module_save_to_path_round_trip(trained, tmp_path):
    path = trained.get_module().save_to_path(tmp_path / "module")
    module = RLModule.from_checkpoint(path)
    assert_same(
        module.forward_inference(random_obs()), trained.get_module().forward_inference(random_obs())
    )


def test_observation_filter_statistics_travel_with_the_checkpoint(tiny_config, build, tmp_path):
    algo = build(tiny_config(seed=1).env_runners(observation_filter="MeanStdFilter"))
    # Distinct statistics, set directly so the comparison below cannot pass by accident.
    normalizer = algo.get_module().obs_normalizer
    normalizer.count.fill_(1000.0)
    normalizer.mean.copy_(torch.tensor([0.1, -0.2, 0.01, 0.3], dtype=torch.float64))
    normalizer.var.copy_(torch.tensor([0.5, 2.0, 0.01, 3.0], dtype=torch.float64))

    path = Path(algo.save_to_path(tmp_path / "checkpoint"))
    restored = PPO.from_checkpoint(path)
    try:
        restored_normalizer = restored.get_module().obs_normalizer
        for name in ("count", "mean", "var"):
            assert torch.equal(getattr(restored_normalizer, name), getattr(normalizer, name))
        # ... and the restored algorithm's runners act with them.
        assert_same(runner_weights(restored), algo.learner.module.get_state(), "runner weights")
    finally:
        restored.stop()

    module = RLModule.from_checkpoint(path / MODULE_DIR)
    assert module.observation_filter == "MeanStdFilter"
    for name in ("count", "mean", "var"):
        assert torch.equal(getattr(module.obs_normalizer, name), getattr(normalizer, name))
    obs = random_obs()
    assert_same(module.forward_inference(obs), algo.get_module().forward_inference(obs))
    # The statistics are used: the same weights without them give other outputs.
    unnormalized = module._forward_inference(obs)
    assert not torch.equal(
        unnormalized[c.ACTION_DIST_INPUTS], module.forward_inference(obs)[c.ACTION_DIST_INPUTS]
    )


def test_observation_filter_is_updated_by_training_and_synced_to_runners(tiny_config, build):
    algo = build(tiny_config(seed=1).env_runners(observation_filter="MeanStdFilter"))
    for _ in range(2):
        result = algo.train()
    normalizer = algo.get_module().obs_normalizer
    # Every trained row updated the running statistics.
    assert int(normalizer.count) == result["num_env_steps_trained_lifetime"]
    assert not torch.equal(normalizer.mean, torch.zeros_like(normalizer.mean))
    assert_same(runner_weights(algo), algo.learner.module.get_state(), "runner weights")


def test_running_mean_std_merges_chunks_like_one_pass_over_all_observations():
    from tunerl.core.rl_module import RunningMeanStd, observation_moments

    rng = np.random.default_rng(0)
    chunks = [rng.normal(loc=3.0, scale=2.0, size=(n, 4)) for n in (5, 50, 1, 17)]
    stats = RunningMeanStd((4,))
    for chunk in chunks:
        stats.update(*observation_moments(chunk))
    everything = np.concatenate(chunks)
    assert int(stats.count) == len(everything)
    np.testing.assert_allclose(stats.mean.numpy(), everything.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats.var.numpy(), everything.var(axis=0), rtol=1e-10)
