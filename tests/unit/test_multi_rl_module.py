"""Modules keyed by id: MultiRLModule and its spec, MultiAgentBatch, and a Learner that
trains any number of modules with named optimizers per module."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest
import torch

from tunerl import MultiAgentBatch, PPOConfig, SACConfig, SampleBatch, concat_samples
from tunerl.algorithms.ppo import PPOLearner
from tunerl.algorithms.sac.sac import SACLearner
from tunerl.algorithms.sac.sac_module import SACModule
from tunerl.core import columns as c
from tunerl.core.checkpoint_io import CheckpointError
from tunerl.core.rl_module import (
    MultiRLModule,
    MultiRLModuleSpec,
    RLModule,
    RLModuleSpec,
    check_module_id,
)

OBS = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
ACTIONS = gym.spaces.Discrete(2)


def two_modules(seed: int = 0) -> MultiRLModule:
    torch.manual_seed(seed)
    spec = RLModuleSpec(observation_space=OBS, action_space=ACTIONS)
    return MultiRLModuleSpec(rl_module_specs={"p0": spec, "p1": spec}).build()


def rollout(module: RLModule, num_rows: int, seed: int) -> SampleBatch:
    """Rows as a runner writes them: one episode of random observations, acted on by `module`."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (num_rows, 4)).astype(np.float32)
    with torch.no_grad():
        out = module.forward_exploration({c.OBS: torch.from_numpy(obs)})
        dist = module.get_action_dist_cls()(out[c.ACTION_DIST_INPUTS])
        actions = dist.sample()
        logp = dist.logp(actions)
    ends = np.zeros(num_rows, bool)
    ends[-1] = True
    return SampleBatch(
        {
            c.OBS: obs,
            c.NEW_OBS: np.roll(obs, -1, axis=0),
            c.ACTIONS: actions.numpy(),
            c.ACTION_LOGP: logp.numpy(),
            c.ACTION_DIST_INPUTS: out[c.ACTION_DIST_INPUTS].numpy(),
            c.VF_PREDS: out[c.VF_PREDS].numpy(),
            c.REWARDS: rng.normal(size=num_rows).astype(np.float32),
            c.TERMINATEDS: ends,
            c.TRUNCATEDS: np.zeros(num_rows, bool),
            c.EPS_ID: np.zeros(num_rows, np.int64),
            c.T: np.arange(num_rows),
        }
    )


def ppo_learner(module: MultiRLModule) -> PPOLearner:
    config = PPOConfig().training(minibatch_size=32, num_epochs=2, use_kl_loss=True)
    return PPOLearner(config, module, seed=0)


# ------------------------------------------------------------------------ the module
def test_a_spec_builds_one_module_per_id_and_a_single_spec_is_default_policy():
    multi = two_modules()
    assert multi.keys() == ["p0", "p1"] and len(multi) == 2 and "p1" in multi
    assert isinstance(multi["p0"], RLModule) and multi["p0"] is not multi["p1"]
    single = MultiRLModuleSpec(
        rl_module_specs=RLModuleSpec(observation_space=OBS, action_space=ACTIONS)
    )
    assert single.build().keys() == [c.DEFAULT_MODULE_ID]


def test_state_is_keyed_by_module_id_and_loads_only_the_ids_given():
    multi, other = two_modules(0), two_modules(1)
    state = multi.get_state()
    assert set(state) == {"p0", "p1"}
    other.set_state({"p1": state["p1"]})
    for key, value in state["p1"].items():
        assert torch.equal(other["p1"].get_state()[key], value)
    assert not torch.equal(other["p0"].get_state()["pi_head.weight"], state["p0"]["pi_head.weight"])
    with pytest.raises(KeyError, match=r"'p2'.*\['p0', 'p1'\]"):
        multi.set_state({"p2": state["p0"]})
    with pytest.raises(KeyError, match="holds"):
        multi["nope"]


@pytest.mark.parametrize("bad", ["", "a/b", "a.b", "_private", " p0", 3])
def test_a_module_id_must_name_a_folder_and_a_result_key(bad):
    with pytest.raises(ValueError, match="not allowed"):
        check_module_id(bad)
    with pytest.raises((ValueError, TypeError)):
        MultiRLModule({bad: two_modules()["p0"]})


def test_add_and_remove_modules():
    multi = two_modules()
    extra = multi.remove_module("p1")
    assert multi.keys() == ["p0"]
    multi.add_module("p1", extra)
    with pytest.raises(ValueError, match="override=True"):
        multi.add_module("p1", extra)
    multi.add_module("p1", extra, override=True)
    assert multi["p1"] is extra


def test_saved_multi_module_loads_whole_and_each_module_alone(tmp_path):
    multi = two_modules()
    path = multi.save_to_path(tmp_path / "modules")
    loaded = MultiRLModule.from_checkpoint(path)
    assert loaded.keys() == ["p0", "p1"]
    for module_id in ("p0", "p1"):
        alone = RLModule.from_checkpoint(os.path.join(path, module_id))
        for key, value in multi[module_id].get_state().items():
            assert torch.equal(alone.get_state()[key], value)
            assert torch.equal(loaded[module_id].get_state()[key], value)


def test_a_symlinked_module_folder_is_refused(tmp_path):
    path = two_modules().save_to_path(tmp_path / "modules")
    folder = tmp_path / "with_link"
    folder.mkdir()
    os.symlink(os.path.join(path, "p0"), folder / "p0")
    with pytest.raises(CheckpointError, match="symlink"):
        MultiRLModule.from_checkpoint(folder)


# ------------------------------------------------------------------------ the batch
def test_multi_agent_batches_concatenate_module_by_module():
    a = MultiAgentBatch({"p0": SampleBatch(x=[1, 2]), "p1": SampleBatch(x=[3])}, env_steps=2)
    b = MultiAgentBatch({"p1": SampleBatch(x=[4, 5])}, env_steps=2)
    both = concat_samples([a, b])
    assert isinstance(both, MultiAgentBatch) and len(both) == 4 and both.agent_steps() == 5
    assert both["p1"]["x"].tolist() == [3, 4, 5]
    with pytest.raises(TypeError):
        concat_samples([a, SampleBatch(x=[1])])
    wrapped = MultiAgentBatch.wrap_as_needed(SampleBatch(x=[1, 2, 3]))
    assert wrapped.module_ids() == [c.DEFAULT_MODULE_ID] and len(wrapped) == 3


# ------------------------------------------------------------------------ the learner
def test_a_learner_trains_every_module_in_the_batch_and_reports_each():
    multi = two_modules()
    learner = ppo_learner(multi)
    before = multi.get_state()
    batch = MultiAgentBatch(
        {"p0": rollout(multi["p0"], 64, 0), "p1": rollout(multi["p1"], 64, 1)}, env_steps=64
    )
    results = learner.update(batch)
    assert set(results) == {"p0", "p1"}
    for module_id in ("p0", "p1"):
        assert np.isfinite(results[module_id]["policy_loss"])
        changed = learner.module[module_id].get_state()["pi_head.weight"]
        assert not torch.equal(changed, before[module_id]["pi_head.weight"])
    # Each module has its own optimizer and KL coefficient.
    assert learner.get_optimizer("p0") is not learner.get_optimizer("p1")
    assert set(learner.kl_coeffs) == {"p0", "p1"}


def test_a_module_without_rows_is_not_updated():
    multi = two_modules()
    learner = ppo_learner(multi)
    before = multi["p1"].get_state()
    results = learner.update(MultiAgentBatch({"p0": rollout(multi["p0"], 64, 0)}, env_steps=64))
    assert set(results) == {"p0"}
    for key, value in before.items():
        assert torch.equal(learner.module["p1"].get_state()[key], value)


def test_learner_state_round_trips_per_module():
    multi = two_modules()
    learner = ppo_learner(multi)
    batch = MultiAgentBatch(
        {"p0": rollout(multi["p0"], 64, 0), "p1": rollout(multi["p1"], 64, 1)}, env_steps=64
    )
    learner.update(batch)
    state = learner.get_state()
    assert set(state["optimizers"]) == {"p0", "p1"}
    assert set(state["optimizers"]["p0"]) == {"default"}
    fresh = ppo_learner(two_modules(seed=5))
    fresh.set_state(state)
    again = batch.copy()
    assert fresh.update(again) == learner.update(batch.copy())


def test_sac_has_named_actor_critic_and_alpha_optimizers_per_module():
    box = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    spec = RLModuleSpec(SACModule, observation_space=OBS, action_space=box)
    multi = MultiRLModuleSpec(rl_module_specs={"p0": spec, "p1": spec}).build()
    learner = SACLearner(SACConfig(), multi, seed=0)
    for module_id in ("p0", "p1"):
        optimizers = learner.get_optimizers_for_module(module_id)
        assert list(optimizers) == ["actor", "critic", "alpha"]
        assert optimizers["alpha"].params == [multi[module_id].log_alpha]
    with pytest.raises(ValueError, match="already has an optimizer named 'actor'"):
        learner.register_optimizer("p0", "actor", learner.get_optimizer("p0", "actor"))
