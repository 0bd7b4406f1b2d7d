"""Proximal Policy Optimization (Schulman et al. 2017), in the order of the algorithm:
config -> loss -> learner -> training_step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.checkpoint_io import json_numbers_per_module
from tunerl.core.config import AlgorithmConfig, ConfigError
from tunerl.core.fields import (
    CLIPPED_SURROGATE_FIELDS,
    NUMBER,
    POLICY_GRADIENT_FIELDS,
    SGD_FIELDS,
    ClippedSurrogateFields,
    Field,
    PolicyGradientFields,
    SGDFields,
    field,
    own_fields,
    with_defaults,
)
from tunerl.core.learner import Learner, LossOutput, minibatch_sgd
from tunerl.core.losses import adapt_kl_coeff, clipped_surrogate, explained_variance
from tunerl.core.postprocessing import add_gae
from tunerl.core.rl_module import MultiRLModule, RLModule, RLModuleSpec
from tunerl.core.rl_module.central_critic import (
    GLOBAL_STATE_DIM,
    CentralCriticRLModule,
    global_state_dim,
    uses_global_state,
)
from tunerl.core.sample_batch import SampleBatch
from tunerl.env.multi_agent_env import MultiAgentEnv
from tunerl.env.registry import make_env

# ----------------------------------------------------------------------------- config
_PPO_DEFAULTS = {
    # Defaults that solve CartPole-v1 untuned within the CLI's 100k env-step cap (a
    # 100-episode mean of 450) and stay sensible elsewhere: experiments/ppo_cartpole.yaml's
    # values (benchmarks/results_seeds.json: readme_ppo_cartpole). lr 3e-4 with 8 envs,
    # 256-row minibatches, gamma 0.99 and lambda 0.95 stopped at the cap with 410.
    "lr": 2e-3,
    "gamma": 0.98,
    "num_envs_per_env_runner": 16,
    "train_batch_size_per_learner": 2048,
    "minibatch_size": 512,
    "num_epochs": 10,
    "grad_clip": 0.5,
}


class PPOConfig(AlgorithmConfig, SGDFields, PolicyGradientFields, ClippedSurrogateFields):
    """PPO's settings: AlgorithmConfig's, minibatch SGD's, the actor-critic loss weights, the
    clipped surrogate's (`tunerl.core.fields`), and the fields below."""

    # fmt: off
    lambda_: float = field("training", 0.9,
        "GAE lambda: 0 is one-step TD, 1 is Monte Carlo.", *NUMBER, low=0, high=1)
    vf_loss_clip: float | None = field("training", None,
        "Cap on each sample's squared value error (RLlib's vf_clip_param).",
        *NUMBER, low=0, low_exclusive=True, nullable=True)
    vf_value_change_clip: float | None = field("training", None,
        "Clip the change of the value prediction from the sampled one to +-this (PPO2, SB3's "
        "clip_range_vf).", *NUMBER, low=0, low_exclusive=True, nullable=True)
    normalize_advantages: bool = field("training", True,
        "Normalize advantages per minibatch to mean 0, std 1.", bool)
    central_critic: bool = field("training", False,
        "MAPPO (Yu et al. 2021): each module's value function reads the env's global state "
        "(env.state(), else all agents' observations), its policy the agent's own observation "
        "(CentralCriticRLModule). Needs a MultiAgentEnv.", bool)
    # fmt: on

    FIELDS: ClassVar[dict[str, Field]] = {
        **with_defaults(
            {
                **AlgorithmConfig.FIELDS,
                **SGD_FIELDS,
                **POLICY_GRADIENT_FIELDS,
                **CLIPPED_SURROGATE_FIELDS,
            },
            _PPO_DEFAULTS,
        ),
        **own_fields(locals()),
    }

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or PPO)


# ------------------------------------------------------------------------------- loss
def ppo_loss(
    module: RLModule, batch: dict[str, torch.Tensor], config: PPOConfig, kl_coeff: float
) -> LossOutput:
    """Clipped surrogate + value loss - entropy bonus (+ adaptive KL penalty)."""
    out = module.forward_train(batch)
    dist_cls = module.get_action_dist_cls()
    curr_dist = dist_cls(out[c.ACTION_DIST_INPUTS])
    prev_dist = dist_cls(batch[c.ACTION_DIST_INPUTS])

    advantages = batch[c.ADVANTAGES]
    if config.normalize_advantages and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = curr_dist.logp(batch[c.ACTIONS]) - batch[c.ACTION_LOGP]
    ratio = torch.exp(log_ratio)
    policy_loss = -clipped_surrogate(ratio, advantages, config.clip_param).mean()

    values, targets = out[c.VF_PREDS], batch[c.VALUE_TARGETS]
    vf_error = (values - targets).pow(2)
    if config.vf_value_change_clip is not None:
        old_values = batch[c.VF_PREDS]
        clipped = old_values + (values - old_values).clamp(
            -config.vf_value_change_clip, config.vf_value_change_clip
        )
        vf_error = torch.max(vf_error, (clipped - targets).pow(2))
    if config.vf_loss_clip is not None:
        vf_error = vf_error.clamp(max=config.vf_loss_clip)
    vf_loss = vf_error.mean()

    entropy = curr_dist.entropy().mean()
    mean_kl = prev_dist.kl(curr_dist).mean()
    loss = policy_loss + config.vf_loss_coeff * vf_loss - config.entropy_coeff * entropy
    if config.use_kl_loss:
        loss = loss + kl_coeff * mean_kl

    with torch.no_grad():
        # KL(old || new) from the sampled actions with the low-variance, always >= 0
        # estimator (ratio - 1) - log ratio (http://joschu.net/blog/kl-approx.html), as
        # CleanRL and SB3 log it; clip_fraction is the share of rows the clip acted on.
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clip_fraction = ((ratio - 1).abs() > config.clip_param).float().mean()
    stats = {
        m.POLICY_LOSS: policy_loss.detach(),
        m.VF_LOSS: vf_loss.detach(),
        m.ENTROPY: entropy.detach(),
        m.MEAN_KL_LOSS: mean_kl.detach(),
        m.VF_EXPLAINED_VAR: explained_variance(targets, values),
        m.APPROX_KL: approx_kl,
        m.CLIP_FRACTION: clip_fraction,
    }
    return LossOutput(loss, stats)


class PPOLearner(Learner):
    """GAE advantages, minibatch SGD on `ppo_loss`, and each module's adaptive KL
    coefficient."""

    LOSS_COLUMNS = (
        c.OBS,
        c.ACTIONS,
        c.ACTION_LOGP,
        c.ACTION_DIST_INPUTS,
        c.VF_PREDS,
        c.ADVANTAGES,
        c.VALUE_TARGETS,
        c.STATE,  # only in the batches of modules whose critic reads the global state
    )

    def __init__(self, config: PPOConfig, module: MultiRLModule, seed: int):
        super().__init__(config, module, seed)
        self.kl_coeffs = {module_id: float(config.kl_coeff) for module_id in module.keys()}

    def postprocess_batch(self, module_id: str, batch: SampleBatch) -> SampleBatch:
        # Advantages with the critic that produced vf_preds, before any SGD step.
        return add_gae(batch, self.module[module_id], self.config.gamma, self.config.lambda_)

    def compute_loss_for_module(self, module_id: str, batch: dict[str, torch.Tensor]) -> LossOutput:
        return ppo_loss(self.module[module_id], batch, self.config, self.kl_coeffs[module_id])

    def update_module(self, module_id: str, batch: SampleBatch) -> dict[str, Any]:
        stats = minibatch_sgd(self, module_id, self.postprocess_batch(module_id, batch))
        if self.config.use_kl_loss:
            self.kl_coeffs[module_id] = adapt_kl_coeff(
                self.kl_coeffs[module_id], stats[m.MEAN_KL_LOSS], self.config.kl_target
            )
        stats[m.CURR_KL_COEFF] = self.kl_coeffs[module_id] if self.config.use_kl_loss else 0.0
        return stats

    def get_extra_state(self) -> dict[str, Any]:
        return {"kl_coeff": dict(self.kl_coeffs)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.kl_coeffs = json_numbers_per_module(
            state, "kl_coeff", float, self.kl_coeffs, "learner state"
        )


# ----------------------------------------------------------------------- training_step
class PPO(Algorithm):
    """The base class's training step: sample, GAE and minibatch SGD in the learner, sync.
    A module that reads the global state (MAPPO) learns its value on the `state` column."""

    config_class = PPOConfig
    learner_class = PPOLearner

    def default_module_spec(
        self, module_id: str, observation_space: gym.Space, action_space: gym.Space
    ) -> RLModuleSpec:
        """The base class's spec; with `central_critic` the module class is
        CentralCriticRLModule, and a module that reads the global state gets its size."""
        spec = super().default_module_spec(module_id, observation_space, action_space)
        if self.config.central_critic:
            if spec.module_class is None:
                spec.module_class = CentralCriticRLModule
            elif not uses_global_state(spec.module_class):
                raise ConfigError(
                    f"central_critic=True, but module {module_id!r} is a "
                    f"{spec.module_class.__name__}, which does not read the global state "
                    "(no uses_global_state = True); drop its module_class or central_critic."
                )
        if uses_global_state(spec.module_class) and GLOBAL_STATE_DIM not in spec.model_config:
            spec.model_config[GLOBAL_STATE_DIM] = self._global_state_dim()
        return spec

    def _global_state_dim(self) -> int:
        config = self.config
        probe = make_env(config.env, config.env_config, 0, 0, self._env_creator)
        try:
            if not isinstance(probe, MultiAgentEnv):
                raise ConfigError(
                    f"A centralised critic (central_critic=True or a module with "
                    f"uses_global_state) needs a MultiAgentEnv; env {config.env!r} is a "
                    f"{type(probe).__name__}."
                )
            return global_state_dim(probe)
        finally:
            probe.close()
