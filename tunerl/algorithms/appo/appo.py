"""APPO: IMPALA's asynchronous sampling and V-trace with PPO's clipped surrogate against a
target network (Luo et al. 2020, "IMPACT"), as RLlib's APPO computes it. In the order of the
algorithm: config -> loss -> learner -> training_step. The sampler over the remote runners
and the learner thread are `tunerl.execution`'s AsyncSampler and LearnerGroup.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.checkpoint_io import json_numbers_per_module
from tunerl.core.config import AlgorithmConfig
from tunerl.core.fields import (
    ASYNC_LEARNING_FIELDS,
    CLIPPED_SURROGATE_FIELDS,
    POLICY_GRADIENT_FIELDS,
    SGD_FIELDS,
    TARGET_NETWORK_FIELDS,
    VTRACE_FIELDS,
    AsyncLearningFields,
    ClippedSurrogateFields,
    Field,
    PolicyGradientFields,
    SGDFields,
    TargetNetworkFields,
    VTraceFields,
    with_defaults,
)
from tunerl.core.learner import Learner, LossOutput, minibatch_sgd
from tunerl.core.losses import adapt_kl_coeff, clipped_surrogate, explained_variance
from tunerl.core.optim import FlatParameters, polyak_update_
from tunerl.core.rl_module import MultiRLModule, RLModule
from tunerl.core.sample_batch import SampleBatch
from tunerl.core.vtrace import add_vtrace
from tunerl.execution.async_ops import AsyncLearning

# Columns the learner adds: the target network's policy on the batch.
TARGET_LOGP = "target_action_logp"
TARGET_DIST_INPUTS = "target_action_dist_inputs"
# IMPACT's target-worker clipping (Luo et al. 2020, section 4.1.1; RLlib's
# target_worker_clipping): the behaviour/target ratio is capped at 2.
_TARGET_WORKER_CLIP = 2.0

# ----------------------------------------------------------------------------- config
_APPO_DEFAULTS = {
    # The tuned CartPole experiment's settings (experiments/appo_cartpole.yaml) but gamma:
    # PPO-like reuse of each batch (8 epochs of 256-row minibatches), PPO's clip, the target
    # network copied after every train batch, and no entropy bonus: with IMPALA's 0.01 the
    # bonus outweighed the ~0.01 V-trace advantages of batches without a termination and
    # pushed the policy towards uniform (seeds 2, 6, 7, 8 of 10 missed 450; with 0 none did).
    "lr": 2e-3,
    "num_envs_per_env_runner": 16,
    "train_batch_size_per_learner": 1024,
    "minibatch_size": 256,
    "num_epochs": 8,
    "grad_clip": 0.5,
    "vf_loss_coeff": 1.0,
    "entropy_coeff": 0.0,
    "clip_param": 0.2,
    "kl_coeff": 1.0,
    "target_network_update_freq": 1024,
    "tau": 1.0,
}


class APPOConfig(
    AlgorithmConfig,
    SGDFields,
    PolicyGradientFields,
    ClippedSurrogateFields,
    VTraceFields,
    AsyncLearningFields,
    TargetNetworkFields,
):
    """APPO's settings: AlgorithmConfig's, minibatch SGD's, the actor-critic loss weights,
    the clipped surrogate's, V-trace's, asynchronous learning's and the target network's
    (`tunerl.core.fields`). `target_network_update_freq` counts env steps trained; the KL
    term is KL(target || current). With `num_env_runners=0` the algorithm samples in its own
    process, synchronously; with N > 0 the runners sample while the learner trains."""

    FIELDS: ClassVar[dict[str, Field]] = with_defaults(
        {
            **AlgorithmConfig.FIELDS,
            **SGD_FIELDS,
            **POLICY_GRADIENT_FIELDS,
            **CLIPPED_SURROGATE_FIELDS,
            **VTRACE_FIELDS,
            **ASYNC_LEARNING_FIELDS,
            **TARGET_NETWORK_FIELDS,
        },
        _APPO_DEFAULTS,
    )

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or APPO)


# ------------------------------------------------------------------------------- loss
def appo_loss(
    module: RLModule, batch: dict[str, torch.Tensor], config: APPOConfig, kl_coeff: float
) -> LossOutput:
    """Clipped surrogate on V-trace advantages (computed with the target network as the
    target policy) + value loss - entropy bonus (+ KL(target || current) penalty)."""
    out = module.forward_train(batch)
    dist_cls = module.get_action_dist_cls()
    dist = dist_cls(out[c.ACTION_DIST_INPUTS])
    behaviour_logp, target_logp = batch[c.ACTION_LOGP], batch[TARGET_LOGP]
    # ratio = min(mu / pi_target, 2) * pi / mu: pi / pi_target where the behaviour policy is
    # close to the target, with the lag of stale runners capped (IMPACT, eq. 8).
    is_ratio = torch.exp(behaviour_logp - target_logp).clamp(0.0, _TARGET_WORKER_CLIP)
    ratio = is_ratio * torch.exp(dist.logp(batch[c.ACTIONS]) - behaviour_logp)
    policy_loss = -clipped_surrogate(ratio, batch[c.ADVANTAGES], config.clip_param).mean()
    values, targets = out[c.VF_PREDS], batch[c.VALUE_TARGETS]
    vf_loss = 0.5 * (values - targets).pow(2).mean()
    entropy = dist.entropy().mean()
    mean_kl = dist_cls(batch[TARGET_DIST_INPUTS]).kl(dist).mean()
    loss = policy_loss + config.vf_loss_coeff * vf_loss - config.entropy_coeff * entropy
    if config.use_kl_loss:
        loss = loss + kl_coeff * mean_kl
    stats = {
        m.POLICY_LOSS: policy_loss.detach(),
        m.VF_LOSS: vf_loss.detach(),
        m.ENTROPY: entropy.detach(),
        m.MEAN_KL_LOSS: mean_kl.detach(),
        m.VF_EXPLAINED_VAR: explained_variance(targets, values),
    }
    return LossOutput(loss, stats)


class APPOLearner(Learner):
    """Per module: a target network, V-trace against it, minibatch SGD on `appo_loss`, the
    adaptive KL coefficient and the target updates."""

    LOSS_COLUMNS = (
        c.OBS,
        c.ACTIONS,
        c.ACTION_LOGP,
        c.ADVANTAGES,
        c.VALUE_TARGETS,
        TARGET_LOGP,
        TARGET_DIST_INPUTS,
    )

    def __init__(self, config: APPOConfig, module: MultiRLModule, seed: int):
        super().__init__(config, module, seed)
        self.kl_coeffs = {module_id: float(config.kl_coeff) for module_id in self.module.keys()}
        self.target_modules = {
            module_id: copy.deepcopy(online).requires_grad_(False)
            for module_id, online in self.module.items()
        }
        self._online = {mid: FlatParameters(mod.parameters()) for mid, mod in self.module.items()}
        self._target = {
            mid: FlatParameters(mod.parameters()) for mid, mod in self.target_modules.items()
        }
        self.steps_since_target_update = {module_id: 0 for module_id in self.module.keys()}

    def compute_loss_for_module(self, module_id: str, batch: dict[str, torch.Tensor]) -> LossOutput:
        return appo_loss(self.module[module_id], batch, self.config, self.kl_coeffs[module_id])

    def postprocess_batch(self, module_id: str, batch: SampleBatch) -> SampleBatch:
        """The target network's action distribution and log-probs, then V-trace with the
        target network as the target policy. The target uses the online module's
        observation filter, which moves every update."""
        online, target = self.module[module_id], self.target_modules[module_id]
        obs = torch.as_tensor(batch[c.OBS], device=self.device)
        with torch.no_grad():
            inputs = target._forward_train(online._preprocess({c.OBS: obs}))
            inputs = inputs[c.ACTION_DIST_INPUTS]
            actions = torch.as_tensor(batch[c.ACTIONS], device=self.device)
            logp = online.get_action_dist_cls()(inputs).logp(actions).cpu().numpy()
        batch[TARGET_DIST_INPUTS] = inputs.cpu().numpy()
        batch[TARGET_LOGP] = logp
        config = self.config
        add_vtrace(
            batch,
            online,
            logp,
            config.gamma,
            config.vtrace_clip_rho_threshold,
            config.vtrace_clip_pg_rho_threshold,
        )
        return batch

    def update_module(self, module_id: str, batch: SampleBatch) -> dict[str, Any]:
        config = self.config
        stats = minibatch_sgd(self, module_id, self.postprocess_batch(module_id, batch))
        if config.use_kl_loss:
            self.kl_coeffs[module_id] = adapt_kl_coeff(
                self.kl_coeffs[module_id], stats[m.MEAN_KL_LOSS], config.kl_target
            )
        stats[m.CURR_KL_COEFF] = self.kl_coeffs[module_id] if config.use_kl_loss else 0.0
        self.steps_since_target_update[module_id] += len(batch)
        self.update_target(module_id)
        return stats

    def update_target(self, module_id: str) -> None:
        """tau < 1: move the target by tau after every update; tau = 1: copy the online
        network once `target_network_update_freq` env steps were trained since the last copy."""
        target, online = self._target[module_id], self._online[module_id]
        if self.config.tau < 1.0:
            polyak_update_(target, online, self.config.tau)
        elif self.steps_since_target_update[module_id] >= self.config.target_network_update_freq:
            polyak_update_(target, online, 1.0)
            self.steps_since_target_update[module_id] = 0

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "kl_coeff": dict(self.kl_coeffs),
            "steps_since_target_update": dict(self.steps_since_target_update),
        }

    def get_extra_tensors(self) -> dict[str, Any]:
        targets = {mid: target.get_state() for mid, target in self.target_modules.items()}
        return {"target_modules": targets}

    def set_extra_tensors(self, tensors: dict[str, Any]) -> None:
        targets = tensors.get("target_modules")
        if not isinstance(targets, dict) or sorted(targets) != sorted(self.target_modules):
            raise ValueError(
                f"target_modules must hold the target networks of {sorted(self.target_modules)}"
                " (a checkpoint of tunerl 0.1's APPO has them in another file: load it with "
                "tunerl 0.1)"
            )
        for module_id, state in targets.items():
            self.target_modules[module_id].set_state(state)

    def set_extra_state(self, state: dict[str, Any]) -> None:
        where = "learner state"
        self.kl_coeffs = json_numbers_per_module(state, "kl_coeff", float, self.kl_coeffs, where)
        self.steps_since_target_update = json_numbers_per_module(
            state, "steps_since_target_update", int, self.steps_since_target_update, where
        )


# ----------------------------------------------------------------------- training_step
class APPO(Algorithm):
    config_class = APPOConfig
    learner_class = APPOLearner

    async_learning: AsyncLearning | None = None

    def build_algorithm_state(self) -> None:
        if self.async_learning is not None:  # reset_config: the last trial's thread
            self.async_learning.stop()
        self.async_learning = AsyncLearning(self)

    def training_step(self) -> dict[str, Any]:
        """The asynchronous step IMPALA and APPO share (`AsyncLearning.training_step`):
        sample what the runners have ready; a learner update, in the background thread
        when there is one (V-trace against the target network, SGD epochs, KL coefficient,
        target update); report the updates that finished and broadcast their weights."""
        return self.async_learning.training_step(self)

    def wait_for_learner(self) -> None:
        if self.async_learning is not None:
            self.async_learning.wait(self)

    def set_extra_state(self, state: dict[str, Any]) -> None:
        del state  # the learner's state is all there is
        self.async_learning.forget()

    def cleanup(self) -> None:
        if self.async_learning is not None:
            self.async_learning.stop()
        super().cleanup()
