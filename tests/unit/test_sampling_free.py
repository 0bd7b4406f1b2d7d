"""The base class serves an algorithm that does not sample (offline RL): it builds only its
evaluation runners, an iteration is defined by trained steps, and the learning-rate
schedule counts trained steps. The algorithm here is behaviour cloning of a fixed
dataset of (obs, action) pairs, in the three pieces of the Learner skeleton."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from tunerl import Algorithm, AlgorithmConfig, MultiAgentBatch, SampleBatch
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.fields import SGD_FIELDS, Field, SGDFields
from tunerl.core.learner import Learner, LossOutput


class CloneConfig(AlgorithmConfig, SGDFields):
    FIELDS: ClassVar[dict[str, Field]] = {**AlgorithmConfig.FIELDS, **SGD_FIELDS}

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or Clone)


class CloneLearner(Learner):
    def compute_loss_for_module(self, module_id: str, batch: dict) -> LossOutput:
        module = self.module[module_id]
        dist = module.get_action_dist_cls()(module.forward_train(batch)[c.ACTION_DIST_INPUTS])
        return LossOutput(-dist.logp(batch[c.ACTIONS]).mean())


def pole_dataset(num_rows: int = 512) -> SampleBatch:
    """CartPole states and the action of a rule that keeps the pole up (push the cart the
    way the pole leans and turns: 3 angle + angular velocity; 500 steps on seeds 0-4)."""
    rng = np.random.default_rng(0)
    obs = rng.uniform(-0.5, 0.5, size=(num_rows, 4)).astype(np.float32)
    push_right = 3 * obs[:, 2] + obs[:, 3] > 0
    return SampleBatch({c.OBS: obs, c.ACTIONS: push_right.astype(np.int64)})


class Clone(Algorithm):
    config_class = CloneConfig
    learner_class = CloneLearner

    @property
    def samples_from_env(self) -> bool:
        return False

    def build_algorithm_state(self) -> None:
        self.dataset = pole_dataset()

    def training_step(self) -> dict[str, Any]:
        rows = self.dataset.select_rows(self._rng.integers(0, len(self.dataset), size=64))
        batch = MultiAgentBatch({c.DEFAULT_MODULE_ID: rows}, env_steps=len(rows))
        with self.timer(m.LEARN_TIMER):
            results = self.learner.update(batch, self.timestep)
        self.count_trained_steps(len(rows))
        self.sync_weights()
        return {m.LEARNER_RESULTS: results}


@pytest.fixture
def clone(build):
    return build(
        CloneConfig()
        .environment("CartPole-v1")
        .training(lr=[[0, 1e-2], [640, 1e-3]], train_batch_size_per_learner=64, minibatch_size=64)
        .evaluation(
            evaluation_interval=1, evaluation_duration=3, evaluation_config={"explore": False}
        )
        .reporting(min_train_timesteps_per_iteration=320)
        .debugging(seed=0)
    )


def test_only_evaluation_runners_are_built_and_nothing_is_sampled(clone):
    assert clone.env_runner_group is None
    assert clone.eval_env_runner_group is not None
    result = clone.train()
    assert result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] == 0
    evaluation = result[m.EVALUATION_RESULTS][m.ENV_RUNNER_RESULTS]
    assert evaluation[m.NUM_EPISODES] == 3
    with pytest.raises(RuntimeError, match="samples from no env"):
        clone.sample_from_runners(10)


def test_an_iteration_is_its_trained_steps_and_the_lr_clock_counts_them(clone):
    first = clone.train()
    # 320 trained rows per iteration: five updates of 64.
    assert first[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == 320
    # The last update of the iteration ran at timestep 256 of the schedule 1e-2 -> 1e-3 over 640.
    lr = first[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID][m.CURR_LR]
    assert lr == pytest.approx(1e-2 + (1e-3 - 1e-2) * 256 / 640)
    second = clone.train()
    assert second[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == 640
    assert second[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID][m.CURR_LR] < lr


def test_the_cloned_policy_balances_the_pole_and_restores(clone, tmp_path):
    for _ in range(4):
        result = clone.train()
    # The cloned rule holds CartPole up far longer than a random policy's ~22 steps.
    assert result[m.EVALUATION_RESULTS][m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN] > 100
    path = clone.save_to_path(tmp_path / "checkpoint")
    restored = Clone.from_checkpoint(path)
    try:
        assert restored.env_runner_group is None
        weights = restored.get_module().get_state()
        for key, value in clone.get_module().get_state().items():
            assert torch.equal(weights[key], value)
        assert restored.train()[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == 4 * 320 + 320
    finally:
        restored.stop()
