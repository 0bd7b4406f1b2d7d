"""Conservative Q-learning (Kumar et al. 2020), continuous actions, on SAC's module and
losses (`tunerl.core.soft_actor_critic_losses`): the critics' soft TD loss plus min_q_weight
times (a temperature-scaled log-sum-exp of Q over sampled actions minus Q of the recorded
action), which pushes down the value of actions the data does not hold; the actor clones
the recorded actions for its first bc_iters updates, then is SAC's. RLlib's CQL, trained on
files without sampling. Discrete actions: `DiscreteCQLConfig` (discrete_cql.py).
In the order of the algorithm: config -> loss -> learner -> training_step."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import gymnasium as gym
import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.checkpoint_io import json_numbers_per_module
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
from tunerl.core.learner import Learner, LossOutput
from tunerl.core.replay_buffers import N_STEP_DISCOUNT
from tunerl.core.rl_module import RLModuleSpec, UnsupportedSpaceError
from tunerl.core.rl_module.soft_actor_critic import SACModule
from tunerl.core.sample_batch import SampleBatch
from tunerl.core.soft_actor_critic_losses import (
    actor_and_alpha_losses,
    register_soft_actor_critic_optimizers,
    soft_targets,
    target_entropy,
    twin_td_loss,
)
from tunerl.offline.offline_data import OfflineData

# ----------------------------------------------------------------------------- config
_CQL_DEFAULTS = {
    # RLlib's CQL (on its SAC defaults).
    "train_batch_size_per_learner": 256,
    "model_config": {"fcnet_hiddens": [256, 256], "fcnet_activation": "relu"},
    # An iteration: 100 updates, then the evaluation (if due) and a result.
    "min_train_timesteps_per_iteration": 25_600,
}


def _check_target_entropy(value: Any) -> str | None:
    if value == "auto" or (isinstance(value, int | float) and not isinstance(value, bool)):
        return None
    return "must be 'auto' or a number"


class CQLConfig(AlgorithmConfig, OfflineInputFields):
    """CQL's settings: AlgorithmConfig's, reading, SAC's learning rates, temperature and
    target critics, and CQL's own (RLlib's names and defaults)."""

    # fmt: off
    actor_lr: float = field("training", 1e-4, "Actor learning rate.",
        *NUMBER, low=0, low_exclusive=True)
    critic_lr: float = field("training", 1e-3, "Critics' learning rate.",
        *NUMBER, low=0, low_exclusive=True)
    alpha_lr: float = field("training", 1e-3, "Entropy temperature's learning rate.",
        *NUMBER, low=0, low_exclusive=True)
    target_entropy: float | Literal["auto"] = field("training", "auto",
        "Entropy the temperature aims for; 'auto' is minus the action dimension.",
        check=_check_target_entropy)
    initial_alpha: float = field("training", 1.0, "Starting entropy temperature.",
        *NUMBER, low=0, low_exclusive=True)
    tau: float = field("training", 0.005,
        "The target critics move this fraction of the way to the critics after every update.",
        *NUMBER, low=0, low_exclusive=True, high=1)
    bc_iters: int = field("training", 20_000,
        "Updates in which the actor clones the recorded actions before it maximizes Q.",
        int, low=0)
    temperature: float = field("training", 1.0,
        "Temperature of the log-sum-exp over sampled actions in the CQL penalty.",
        *NUMBER, low=0, low_exclusive=True)
    num_actions: int = field("training", 10,
        "Actions sampled per state from each of: uniform, the policy at s, the policy at s'.",
        int, low=1)
    min_q_weight: float = field("training", 5.0, "Weight of the CQL penalty.", *NUMBER, low=0)
    deterministic_backup: bool = field("training", True,
        "TD targets without the entropy term -alpha log pi(a'|s').", bool)
    # fmt: on

    # Only sampling reads these (tunerl.core.fields.SAMPLING_ONLY_FIELDS).
    rollout_fragment_length = min_sample_timesteps_per_iteration = NOT_ACCEPTED

    FIELDS: ClassVar[dict[str, Field]] = {
        **with_defaults(
            {**without_sampling_fields(AlgorithmConfig.FIELDS), **OFFLINE_INPUT_FIELDS},
            _CQL_DEFAULTS,
        ),
        **own_fields(locals()),
    }

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or CQL)


# ------------------------------------------------------------------------------- loss
def cql_penalty(
    module: SACModule,
    batch: dict[str, torch.Tensor],
    num_actions: int,
    temperature: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per critic (shape (2,)): temperature * mean_s logsumexp_a'(Q(s, a') / temperature)
    - mean Q(s, a_data), the a' being num_actions uniform actions (less their log-density),
    and as many from the policy at s and at s' (less their log-probabilities), as in the
    authors' code and RLlib's."""
    obs, rows = batch[c.OBS], len(batch[c.OBS])
    action_dim = batch[c.ACTIONS].shape[-1]
    repeated_obs = obs.repeat_interleave(num_actions, dim=0)
    with torch.no_grad():
        uniform = torch.rand(rows * num_actions, action_dim, generator=generator) * 2 - 1
        uniform_logp = torch.full((rows * num_actions,), action_dim * math.log(0.5))
        sampled = [(uniform, uniform_logp)]
        for states in (obs, batch[c.NEW_OBS]):
            inputs = module.forward_train({c.OBS: states.repeat_interleave(num_actions, 0)})
            sampled.append(TanhGaussian(inputs[c.ACTION_DIST_INPUTS]).rsample_with_logp(generator))
    q_sampled = [
        module.q_values(repeated_obs, actions) - logp for actions, logp in sampled
    ]  # each (2, rows * num_actions)
    q_all = torch.cat([q.reshape(2, rows, num_actions) for q in q_sampled], dim=-1)
    q_data = module.q_values(obs, batch[c.ACTIONS])
    logsumexp = torch.logsumexp(q_all / temperature, dim=-1).mean(dim=-1) * temperature
    return logsumexp - q_data.mean(dim=-1)


def cql_critic_loss(
    module: SACModule,
    batch: dict[str, torch.Tensor],
    config: CQLConfig,
    generator: torch.Generator | None = None,
) -> LossOutput:
    """SAC's twin TD loss (without the entropy term under deterministic_backup) plus
    min_q_weight times the sum of both critics' `cql_penalty`."""
    with torch.no_grad():
        next_dist = TanhGaussian(
            module.forward_train({c.OBS: batch[c.NEW_OBS]})[c.ACTION_DIST_INPUTS]
        )
        next_actions, next_logp = next_dist.rsample_with_logp(generator)
        next_value = module.target_min_q(batch[c.NEW_OBS], next_actions)
        if not config.deterministic_backup:
            next_value = next_value - module.log_alpha.exp() * next_logp
        targets = soft_targets(batch, next_value)
    td = twin_td_loss(module.q_values(batch[c.OBS], batch[c.ACTIONS]), targets, None)
    penalty = cql_penalty(module, batch, config.num_actions, config.temperature, generator)
    cql_loss = config.min_q_weight * penalty.sum()
    stats = {**td.stats, m.CQL_LOSS: cql_loss.detach()}
    return LossOutput(td.loss + cql_loss, stats)


def bc_actor_and_alpha_losses(
    module: SACModule,
    batch: dict[str, torch.Tensor],
    target_entropy_value: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The actor's loss while it clones: mean(alpha log pi(a~|s) - log pi(a_data|s)), a~
    reparameterized; the temperature's loss as SAC's."""
    dist = TanhGaussian(module.forward_train({c.OBS: batch[c.OBS]})[c.ACTION_DIST_INPUTS])
    _, logp = dist.rsample_with_logp(generator)
    alpha = module.log_alpha.exp()
    actor_loss = (alpha.detach() * logp - dist.logp(batch[c.ACTIONS])).mean()
    alpha_loss = -(module.log_alpha * (logp.detach() + target_entropy_value)).mean()
    stats = {m.ACTOR_LOSS: actor_loss.detach(), m.ALPHA_LOSS: alpha_loss.detach()}
    return actor_loss, alpha_loss, {**stats, m.ALPHA_VALUE: alpha.detach()}


class CQLLearner(Learner):
    """Per batch: a critic step on `cql_critic_loss`, an actor and temperature step (cloning
    for the first bc_iters updates), then the target update; counts its updates."""

    def __init__(self, config: Any, module: Any, seed: int):
        super().__init__(config, module, seed)
        self.num_updates = {module_id: 0 for module_id in self.module.keys()}

    def configure_optimizers_for_module(self, module_id: str) -> None:
        config = self.config
        register_soft_actor_critic_optimizers(
            self, module_id, config.actor_lr, config.critic_lr, config.alpha_lr
        )

    def update_module(self, module_id: str, batch: SampleBatch) -> dict[str, Any]:
        module, config, tensors = self.module[module_id], self.config, self.to_tensors(batch)
        tensors[N_STEP_DISCOUNT] = torch.full_like(tensors[c.REWARDS], config.gamma)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(self.rng.integers(2**62)))
        critic = cql_critic_loss(module, tensors, config, generator)
        self.apply_gradients(module_id, critic.loss, ["critic"])
        entropy = target_entropy(config.target_entropy, module.action_space)
        losses = (
            bc_actor_and_alpha_losses
            if self.num_updates[module_id] < config.bc_iters
            else actor_and_alpha_losses
        )
        actor_loss, alpha_loss, actor_stats = losses(module, tensors, entropy, generator)
        self.apply_gradients(module_id, actor_loss + alpha_loss, ["actor", "alpha"])
        module.update_targets(config.tau)
        self.num_updates[module_id] += 1
        return {key: float(value) for key, value in {**critic.stats, **actor_stats}.items()}

    def get_extra_state(self) -> dict[str, Any]:
        return {"num_updates": dict(self.num_updates)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.num_updates = json_numbers_per_module(
            state, "num_updates", int, self.num_updates, "learner state"
        )


# ----------------------------------------------------------------------- training_step
class CQL(Algorithm):
    config_class = CQLConfig
    learner_class = CQLLearner
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
                f"CQL trains on Box actions, got {spec.action_space}; for Discrete actions "
                "use DiscreteCQLConfig (tunerl.algorithms.cql)."
            )
        if spec.module_class is None:
            spec.module_class = SACModule
        spec.model_config = {"initial_alpha": self.config.initial_alpha, **spec.model_config}
        return spec

    def build_algorithm_state(self) -> None:
        self.data = OfflineData.for_modules(self.config, self.module_spec, self.draw_seed())

    def training_step(self) -> dict[str, Any]:
        # 1. read a shuffled batch of each module's recorded transitions
        # 2. learn (evaluation sends the weights to its runners itself)
        return self.train_on_batch(self.data.sample_batch(self.config.train_batch_size_per_learner))

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.data.reseed(self.draw_seed())
