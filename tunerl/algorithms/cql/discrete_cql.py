"""Conservative Q-learning for Discrete actions (Kumar et al. 2020, CQL(H) in its discrete
form; d3rlpy's DiscreteCQL; RLlib has none), on DQN's module and TD loss
(`tunerl.core.q_learning_losses`): the double-Q TD loss plus min_q_weight times
mean(logsumexp_a Q(s, a) - Q(s, a_data)). The policy is greedy in Q.
In the order of the algorithm: config -> loss -> learner -> training_step."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.config import AlgorithmConfig
from tunerl.core.fields import (
    LR_FIELDS,
    NOT_ACCEPTED,
    NUMBER,
    OFFLINE_INPUT_FIELDS,
    Field,
    LRFields,
    OfflineInputFields,
    field,
    own_fields,
    with_defaults,
    without_sampling_fields,
)
from tunerl.core.learner import Learner, LossOutput
from tunerl.core.q_learning_losses import q_td_loss
from tunerl.core.replay_buffers import N_STEP_DISCOUNT
from tunerl.core.rl_module import RLModuleSpec
from tunerl.core.rl_module.q_network import Q_VALUES, DQNModule
from tunerl.core.sample_batch import SampleBatch
from tunerl.offline.offline_data import OfflineData

# ----------------------------------------------------------------------------- config
_DISCRETE_CQL_DEFAULTS = {
    "lr": 5e-4,
    "train_batch_size_per_learner": 256,
    "model_config": {"fcnet_hiddens": [64, 64], "fcnet_activation": "relu", "dueling": True},
    "min_train_timesteps_per_iteration": 25_600,
}


class DiscreteCQLConfig(AlgorithmConfig, LRFields, OfflineInputFields):
    """Discrete CQL's settings: AlgorithmConfig's, the learning rate, reading, and below."""

    # fmt: off
    tau: float = field("training", 0.005,
        "The target network moves this fraction of the way to the online one per update.",
        *NUMBER, low=0, low_exclusive=True, high=1)
    min_q_weight: float = field("training", 1.0,
        "Weight of the CQL penalty mean(logsumexp_a Q(s, a) - Q(s, a_data)).", *NUMBER, low=0)
    # fmt: on

    # Only sampling reads these (tunerl.core.fields.SAMPLING_ONLY_FIELDS).
    rollout_fragment_length = min_sample_timesteps_per_iteration = NOT_ACCEPTED

    FIELDS: ClassVar[dict[str, Field]] = {
        **with_defaults(
            {
                **without_sampling_fields(AlgorithmConfig.FIELDS),
                **LR_FIELDS,
                **OFFLINE_INPUT_FIELDS,
            },
            _DISCRETE_CQL_DEFAULTS,
        ),
        **own_fields(locals()),
    }

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or DiscreteCQL)


# ------------------------------------------------------------------------------- loss
def discrete_cql_loss(
    module: DQNModule, batch: dict[str, torch.Tensor], min_q_weight: float
) -> LossOutput:
    """Double-Q TD loss (Huber) + min_q_weight * mean(logsumexp_a Q(s, a) - Q(s, a_data))."""
    td = q_td_loss(module, batch, double_q=True, td_error_loss_fn="huber")
    q_values = module.forward_train({c.OBS: batch[c.OBS]})[Q_VALUES]
    q_data = q_values.gather(-1, batch[c.ACTIONS].long().unsqueeze(-1)).squeeze(-1)
    penalty = (torch.logsumexp(q_values, dim=-1) - q_data).mean()
    cql_loss = min_q_weight * penalty
    return LossOutput(td.loss + cql_loss, {**td.stats, m.CQL_LOSS: cql_loss.detach()})


class DiscreteCQLLearner(Learner):
    """One gradient step per batch, then the target network's Polyak update."""

    def update_module(self, module_id: str, batch: SampleBatch) -> dict[str, Any]:
        tensors = self.to_tensors(batch)
        tensors[N_STEP_DISCOUNT] = torch.full_like(tensors[c.REWARDS], self.config.gamma)
        stats = self.gradient_step(module_id, tensors)
        self.module[module_id].update_target(self.config.tau)
        return stats

    def compute_loss_for_module(self, module_id: str, batch: dict[str, torch.Tensor]) -> LossOutput:
        return discrete_cql_loss(self.module[module_id], batch, self.config.min_q_weight)


# ----------------------------------------------------------------------- training_step
class DiscreteCQL(Algorithm):
    config_class = DiscreteCQLConfig
    learner_class = DiscreteCQLLearner

    @property
    def samples_from_env(self) -> bool:
        return False

    def default_module_spec(
        self, module_id: str, observation_space: gym.Space, action_space: gym.Space
    ) -> RLModuleSpec:
        spec = super().default_module_spec(module_id, observation_space, action_space)
        if spec.module_class is None:
            spec.module_class = DQNModule
        return spec

    def build_algorithm_state(self) -> None:
        for module in self.learner.module.values():
            module.epsilon.fill_(0.0)  # the policy is greedy in Q, exploring or not
        self.data = OfflineData.for_modules(self.config, self.module_spec, self.draw_seed())

    def training_step(self) -> dict[str, Any]:
        # 1. read a shuffled batch of each module's recorded transitions
        # 2. learn (evaluation sends the weights to its runners itself)
        return self.train_on_batch(self.data.sample_batch(self.config.train_batch_size_per_learner))

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.data.reseed(self.draw_seed())
