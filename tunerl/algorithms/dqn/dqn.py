"""DQN with the Rainbow pieces that pay on small problems: double Q (van Hasselt et al.
2016), dueling heads (Wang et al. 2016), n-step returns and prioritized replay (Hessel et al.
2018). In the order of the algorithm: config -> loss -> learner -> training_step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import gymnasium as gym
import torch

from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.checkpoint_io import CheckpointReader, json_number
from tunerl.core.checkpoint_layout import STATE_FILE
from tunerl.core.config import AlgorithmConfig
from tunerl.core.fields import (
    LR_FIELDS,
    REPLAY_FIELDS,
    TARGET_NETWORK_FIELDS,
    Field,
    LRFields,
    ReplayFields,
    TargetNetworkFields,
    check_schedule,
    field,
    own_fields,
    with_defaults,
)
from tunerl.core.learner import Learner, LossOutput, scheduled_value
from tunerl.core.off_policy import ReplayState
from tunerl.core.q_learning_losses import q_td_loss
from tunerl.core.rl_module import RLModuleSpec
from tunerl.core.rl_module.q_network import DQNModule

# ----------------------------------------------------------------------------- config
_DQN_DEFAULTS = {
    # Defaults that solve CartPole-v1 untuned (with the training fields' defaults below:
    # uniform replay, soft target updates with tau 0.005, epsilon down to 0.01 by 3,000 steps,
    # 64 replayed per sampled step in updates of 128, 3-step returns). Seeds 1-5 reached a
    # 100-episode mean of 450 within 60-69k env steps; tunerl 0.1.0's (updates of 64, 32
    # replayed per step, epsilon over 10,000 steps, n-step returns cut at fragment ends)
    # needed 85-86k and missed on one seed of three within 150k. n_step 5 and 32 replayed per
    # step each missed on one seed of three within 100k. Prioritized replay is one setting
    # away; on CartPole it learned slower here.
    "lr": 1e-3,
    "gamma": 0.99,
    "num_envs_per_env_runner": 4,
    "rollout_fragment_length": 4,
    "train_batch_size_per_learner": 128,
    "grad_clip": 10.0,
    "min_sample_timesteps_per_iteration": 1000,
    "model_config": {"fcnet_hiddens": [64, 64], "fcnet_activation": "relu", "dueling": True},
}


class DQNConfig(AlgorithmConfig, LRFields, ReplayFields, TargetNetworkFields):
    """DQN's settings: AlgorithmConfig's, the learning rate, the replay buffer's and the
    target network's (`tunerl.core.fields`), and the fields below."""

    # fmt: off
    beta_annealing_steps: int = field("training", 100_000,
        "Env steps over which prioritized replay's beta rises linearly to 1.", int, low=1)
    double_q: bool = field("training", True,
        "Pick the next action with the online net and rate it with the target net.", bool)
    epsilon: float | list[list[float]] = field("training", [[0, 1.0], [3_000, 0.01]],
        "Exploration: a constant or [[env_step, epsilon], ...] interpolated linearly.",
        check=lambda v: check_schedule(v) if isinstance(v, list | tuple) else (
            None if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1
            else "must be a number in [0, 1] or a schedule")
        )
    td_error_loss_fn: Literal["huber", "mse"] = field("training", "huber",
        "Loss on the TD error.", choices=("huber", "mse"))
    # fmt: on

    FIELDS: ClassVar[dict[str, Field]] = {
        **with_defaults(
            {**AlgorithmConfig.FIELDS, **LR_FIELDS, **REPLAY_FIELDS, **TARGET_NETWORK_FIELDS},
            _DQN_DEFAULTS,
        ),
        **own_fields(locals()),
    }

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or DQN)


# ------------------------------------------------------------------------------- loss
def dqn_loss(module: DQNModule, batch: dict[str, torch.Tensor], config: DQNConfig) -> LossOutput:
    """TD loss on n-step targets, with the per-sample TD errors (the priorities)."""
    return q_td_loss(module, batch, config.double_q, config.td_error_loss_fn)


class DQNLearner(Learner):
    """One gradient step on `dqn_loss` per replayed batch (the base class's update)."""

    def compute_loss_for_module(self, module_id: str, batch: dict[str, torch.Tensor]) -> LossOutput:
        return dqn_loss(self.module[module_id], batch, self.config)


# ----------------------------------------------------------------------- training_step
class DQN(Algorithm):
    config_class = DQNConfig
    learner_class = DQNLearner

    def default_module_spec(
        self, module_id: str, observation_space: gym.Space, action_space: gym.Space
    ) -> RLModuleSpec:
        spec = super().default_module_spec(module_id, observation_space, action_space)
        if self.config.rl_module_spec is None or spec.module_class is None:
            spec.module_class = DQNModule
        return spec

    def build_algorithm_state(self) -> None:
        self.replay = ReplayState(self.config, self.learner.module.keys(), self.draw_seed)
        self._steps_since_target_update = 0
        self._set_epsilon()

    def _set_epsilon(self) -> float:
        steps = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        epsilon = scheduled_value(self.config.epsilon, steps)
        for module in self.learner.module.values():
            module.epsilon.fill_(epsilon)
        return epsilon

    def _update_targets(self, tau: float) -> None:
        for module in self.learner.module.values():
            module.update_target(tau)

    def training_step(self) -> dict[str, Any]:
        config = self.config
        # 1. sample, as n-step transitions into the buffers
        batch = self.sample_from_runners(config.env_steps_per_round())
        self.replay.add(batch)
        sampled = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        results: dict[str, dict[str, Any]] = {}
        # 2. learn: training_intensity replayed transitions per sampled step
        with self.timer(m.LEARN_TIMER):
            beta0 = config.replay_buffer_config.get("beta", 0.4)
            beta = beta0 + (1.0 - beta0) * min(1.0, sampled / config.beta_annealing_steps)
            for _ in range(self.replay.updates_owed(len(batch), sampled)):
                replayed, slots = self.replay.sample(config.train_batch_size_per_learner, beta=beta)
                results = self.learner.update(replayed, sampled)
                self.replay.update_priorities(slots, results)
                self.count_trained_steps(len(replayed))
                if config.tau < 1.0:
                    self._update_targets(config.tau)
            self._steps_since_target_update += len(batch)
            if config.tau >= 1.0 and (
                self._steps_since_target_update >= config.target_network_update_freq
            ):
                self._update_targets(1.0)
                self._steps_since_target_update = 0
            self.learner.update_observation_filters(batch)
        epsilon = self._set_epsilon()
        for module_id in self.learner.module.keys():
            results.setdefault(module_id, {})[m.CURR_EPSILON] = epsilon
        # 3. sync
        self.sync_weights()
        return {m.LEARNER_RESULTS: results}

    # ----------------------------------------------------------------- checkpoints
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "update_credit": self.replay.update_credit,
            "steps_since_target_update": self._steps_since_target_update,
        }

    def save_extra_files(self, directory: Path) -> None:
        self.replay.save(directory)

    def load_extra_files(self, reader: CheckpointReader, extra_state: dict[str, Any]) -> dict:
        where = f"{STATE_FILE}: extra"
        return {
            "update_credit": json_number(extra_state, "update_credit", float, where, 0.0),
            "steps_since_target_update": json_number(
                extra_state, "steps_since_target_update", int, where, 0
            ),
            "replay_buffers": self.replay.read(reader),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.replay.update_credit = state["update_credit"]
        self._steps_since_target_update = state["steps_since_target_update"]
        self.replay.restore(state["replay_buffers"], self.draw_seed)
        self._set_epsilon()
