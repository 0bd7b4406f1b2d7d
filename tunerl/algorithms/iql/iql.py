"""Implicit Q-learning (Kostrikov et al. 2021), continuous actions: a value V(s) fit by
expectile regression to the target critics' Q(s, a_data), twin critics fit to r + gamma
V(s'), and the actor by advantage-weighted regression on the recorded actions, weights
exp((Q - V) / beta) clipped at 100. No action outside the data is ever evaluated. RLlib's
IQL (its beta: larger is less greedy), trained on files without sampling.
In the order of the algorithm: config -> loss -> learner -> training_step."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.config import AlgorithmConfig
from tunerl.core.distributions import TanhGaussian
from tunerl.core.fields import (
    NOT_ACCEPTED,
    NUMBER,
    OFFLINE_INPUT_FIELDS,
    Field,
    OfflineInputFields,
    field,
    own_fields,
    with_defaults,
    without_sampling_fields,
)
from tunerl.core.learner import Learner
from tunerl.core.optim import Adam
from tunerl.core.rl_module import MLP, RLModuleSpec, UnsupportedSpaceError, linear_head
from tunerl.core.rl_module.soft_actor_critic import SACModule
from tunerl.core.sample_batch import SampleBatch
from tunerl.core.soft_actor_critic_losses import twin_td_loss
from tunerl.offline.offline_data import OfflineData

# ----------------------------------------------------------------------------- config
_IQL_DEFAULTS = {
    "train_batch_size_per_learner": 256,
    "model_config": {"fcnet_hiddens": [256, 256], "fcnet_activation": "relu"},
    "min_train_timesteps_per_iteration": 25_600,
}
# Kostrikov et al.: advantage weights are clipped at 100 against overflow.
MAX_ADVANTAGE_WEIGHT = 100.0


class IQLConfig(AlgorithmConfig, OfflineInputFields):
    """IQL's settings: AlgorithmConfig's, reading, and below (RLlib's names and defaults;
    tau as the paper's, where RLlib copies the critics after every update)."""

    # fmt: off
    actor_lr: float = field("training", 3e-4, "Actor learning rate.",
        *NUMBER, low=0, low_exclusive=True)
    critic_lr: float = field("training", 3e-4, "Critics' learning rate.",
        *NUMBER, low=0, low_exclusive=True)
    value_lr: float = field("training", 3e-4, "Value network's learning rate.",
        *NUMBER, low=0, low_exclusive=True)
    beta: float = field("training", 0.1,
        "Temperature of the advantage weights exp((Q - V) / beta): larger is less greedy.",
        *NUMBER, low=0, low_exclusive=True)
    expectile: float = field("training", 0.8,
        "Expectile of Q that V regresses on (0.5: the mean; towards 1: the maximum).",
        *NUMBER, low=0, low_exclusive=True, high=1)
    tau: float = field("training", 0.005,
        "The target critics move this fraction of the way to the critics after every update.",
        *NUMBER, low=0, low_exclusive=True, high=1)
    # fmt: on

    # Only sampling reads these (tunerl.core.fields.SAMPLING_ONLY_FIELDS).
    rollout_fragment_length = min_sample_timesteps_per_iteration = NOT_ACCEPTED

    FIELDS: ClassVar[dict[str, Field]] = {
        **with_defaults(
            {**without_sampling_fields(AlgorithmConfig.FIELDS), **OFFLINE_INPUT_FIELDS},
            _IQL_DEFAULTS,
        ),
        **own_fields(locals()),
    }

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or IQL)


class IQLModule(SACModule):
    """SAC's module (squashed-Gaussian actor, twin critics and their targets) and a value
    network V(s). A PPO or SAC run can start from its actor."""

    def setup(self) -> None:
        super().setup()
        hiddens = list(self.model_config["fcnet_hiddens"])
        obs_dim = self.twin_q.weights[0].shape[1] - int(self.action_space.shape[0])
        self.value_encoder = MLP([obs_dim, *hiddens], self.model_config["fcnet_activation"])
        self.value_head = linear_head(hiddens[-1], 1, gain=1.0)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        obs = self._flat(self._preprocess({c.OBS: obs})[c.OBS])
        return self.value_head(self.value_encoder(obs)).squeeze(-1)

    def value_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.value_encoder.parameters(), *self.value_head.parameters()]


# ------------------------------------------------------------------------------- loss
def iql_losses(
    module: IQLModule, batch: dict[str, torch.Tensor], config: IQLConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The value, critic and actor losses (disjoint parameters: one backward serves all):
    value: mean(|expectile - 1[u < 0]| u^2), u = min target Q(s, a) - V(s);
    critics: SAC's twin TD loss on r + gamma (1 - terminated) V(s');
    actor: -mean(min(exp(u / beta), 100) log pi(a|s)), u without gradient."""
    target_q = module.target_min_q(batch[c.OBS], batch[c.ACTIONS])
    values = module.values(batch[c.OBS])
    diff = target_q - values
    weight = torch.abs(config.expectile - (diff < 0).float())
    value_loss = (weight * diff.pow(2)).mean()
    with torch.no_grad():
        not_terminated = 1.0 - batch[c.TERMINATEDS].float()
        targets = batch[c.REWARDS] + config.gamma * not_terminated * module.values(batch[c.NEW_OBS])
    critic = twin_td_loss(module.q_values(batch[c.OBS], batch[c.ACTIONS]), targets, None)
    dist = TanhGaussian(module.forward_train({c.OBS: batch[c.OBS]})[c.ACTION_DIST_INPUTS])
    advantage_weights = torch.exp(diff.detach() / config.beta).clamp(max=MAX_ADVANTAGE_WEIGHT)
    actor_loss = -(advantage_weights * dist.logp(batch[c.ACTIONS])).mean()
    stats = {
        **critic.stats,
        m.VALUE_LOSS: value_loss.detach(),
        m.ACTOR_LOSS: actor_loss.detach(),
    }
    return value_loss, critic.loss, actor_loss, stats


class IQLLearner(Learner):
    """Per batch: one step of the three optimizers on `iql_losses`, then the target update."""

    def configure_optimizers_for_module(self, module_id: str) -> None:
        module, config = self.module[module_id], self.config
        for name, params, lr in (
            ("actor", module.actor_parameters(), config.actor_lr),
            ("critic", module.critic_parameters(), config.critic_lr),
            ("value", module.value_parameters(), config.value_lr),
        ):
            self.register_optimizer(module_id, name, Adam(params, lr))

    def update_module(self, module_id: str, batch: SampleBatch) -> dict[str, Any]:
        module = self.module[module_id]
        value_loss, critic_loss, actor_loss, stats = iql_losses(
            module, self.to_tensors(batch), self.config
        )
        self.apply_gradients(module_id, value_loss + critic_loss + actor_loss)
        module.update_targets(self.config.tau)
        return {key: float(value) for key, value in stats.items()}


# ----------------------------------------------------------------------- training_step
class IQL(Algorithm):
    config_class = IQLConfig
    learner_class = IQLLearner
    # The contract suite runs it on a Box-action env.
    continuous_actions_only = True

    @property
    def samples_from_env(self) -> bool:
        return False

    def default_module_spec(
        self, module_id: str, observation_space: gym.Space, action_space: gym.Space
    ) -> RLModuleSpec:
        spec = super().default_module_spec(module_id, observation_space, action_space)
        if not isinstance(spec.action_space, gym.spaces.Box):
            raise UnsupportedSpaceError(
                f"IQL trains on Box actions, got {spec.action_space}; for Discrete actions "
                "use DiscreteCQLConfig, MARWILConfig or BCConfig."
            )
        if spec.module_class is None:
            spec.module_class = IQLModule
        return spec

    def build_algorithm_state(self) -> None:
        self.data = OfflineData.for_modules(self.config, self.module_spec, self.draw_seed())

    def training_step(self) -> dict[str, Any]:
        # 1. read a shuffled batch of each module's recorded transitions
        # 2. learn (evaluation sends the weights to its runners itself)
        return self.train_on_batch(self.data.sample_batch(self.config.train_batch_size_per_learner))

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.data.reseed(self.draw_seed())
