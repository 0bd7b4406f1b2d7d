"""IMPALA (Espeholt et al. 2018): runners sample asynchronously with slightly stale weights,
and V-trace corrects the learner's targets for the lag. In the order of the algorithm:
config -> loss -> learner -> training_step. The sampler over the remote runners and the
learner thread are `tunerl.execution`'s AsyncSampler and LearnerGroup (APPO uses them too).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.config import AlgorithmConfig
from tunerl.core.fields import (
    ASYNC_LEARNING_FIELDS,
    POLICY_GRADIENT_FIELDS,
    SGD_FIELDS,
    VTRACE_FIELDS,
    AsyncLearningFields,
    Field,
    PolicyGradientFields,
    SGDFields,
    VTraceFields,
    with_defaults,
)
from tunerl.core.learner import Learner, LossOutput, minibatch_sgd
from tunerl.core.losses import explained_variance
from tunerl.core.rl_module import RLModule
from tunerl.core.sample_batch import SampleBatch
from tunerl.core.vtrace import add_vtrace
from tunerl.execution.async_ops import AsyncLearning

# ----------------------------------------------------------------------------- config
_IMPALA_DEFAULTS = {
    "lr": 5e-4,
    "num_envs_per_env_runner": 8,
    "train_batch_size_per_learner": 512,
    "minibatch_size": 512,
    "grad_clip": 40.0,
    "vf_loss_coeff": 0.5,
    "entropy_coeff": 0.01,
}


class IMPALAConfig(
    AlgorithmConfig, SGDFields, PolicyGradientFields, VTraceFields, AsyncLearningFields
):
    """IMPALA's settings: AlgorithmConfig's, minibatch SGD's, the actor-critic loss weights,
    V-trace's and asynchronous learning's (`tunerl.core.fields`). With `num_env_runners=0`
    the algorithm samples in its own process, synchronously (correct, on-policy, not
    asynchronous); with N > 0 the runners sample while the learner trains."""

    FIELDS: ClassVar[dict[str, Field]] = with_defaults(
        {
            **AlgorithmConfig.FIELDS,
            **SGD_FIELDS,
            **POLICY_GRADIENT_FIELDS,
            **VTRACE_FIELDS,
            **ASYNC_LEARNING_FIELDS,
        },
        _IMPALA_DEFAULTS,
    )

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or IMPALA)


# ------------------------------------------------------------------------------- loss
def impala_loss(
    module: RLModule, batch: dict[str, torch.Tensor], config: IMPALAConfig
) -> LossOutput:
    """V-trace policy gradient + value loss toward the V-trace targets - entropy bonus
    (Espeholt et al. 2018, section 4.2). The advantages already carry the clipped ratio."""
    out = module.forward_train(batch)
    dist = module.get_action_dist_cls()(out[c.ACTION_DIST_INPUTS])
    policy_loss = -(dist.logp(batch[c.ACTIONS]) * batch[c.ADVANTAGES]).mean()
    values, targets = out[c.VF_PREDS], batch[c.VALUE_TARGETS]
    # Half the squared error: its gradient is the paper's (v_s - V(x_s)) grad V(x_s).
    vf_loss = 0.5 * (values - targets).pow(2).mean()
    entropy = dist.entropy().mean()
    loss = policy_loss + config.vf_loss_coeff * vf_loss - config.entropy_coeff * entropy
    stats = {
        m.POLICY_LOSS: policy_loss.detach(),
        m.VF_LOSS: vf_loss.detach(),
        m.ENTROPY: entropy.detach(),
        m.VF_EXPLAINED_VAR: explained_variance(targets, values),
    }
    return LossOutput(loss, stats)


def policy_logp(module: RLModule, batch: SampleBatch) -> np.ndarray:
    """log pi(a_t | x_t) of the batch's actions under `module`'s policy now."""
    device = next(module.parameters()).device
    with torch.no_grad():
        out = module.forward_train({c.OBS: torch.as_tensor(batch[c.OBS], device=device)})
        dist = module.get_action_dist_cls()(out[c.ACTION_DIST_INPUTS])
        return dist.logp(torch.as_tensor(batch[c.ACTIONS], device=device)).cpu().numpy()


class IMPALALearner(Learner):
    """V-trace with the current policy as the target policy, then SGD on `impala_loss`."""

    LOSS_COLUMNS = (c.OBS, c.ACTIONS, c.ADVANTAGES, c.VALUE_TARGETS)

    def postprocess_batch(self, module_id: str, batch: SampleBatch) -> SampleBatch:
        config, module = self.config, self.module[module_id]
        add_vtrace(
            batch,
            module,
            policy_logp(module, batch),
            config.gamma,
            config.vtrace_clip_rho_threshold,
            config.vtrace_clip_pg_rho_threshold,
        )
        return batch

    def compute_loss_for_module(self, module_id: str, batch: dict[str, torch.Tensor]) -> LossOutput:
        return impala_loss(self.module[module_id], batch, self.config)

    def update_module(self, module_id: str, batch: SampleBatch) -> dict[str, Any]:
        return minibatch_sgd(self, module_id, self.postprocess_batch(module_id, batch))


# ----------------------------------------------------------------------- training_step
class IMPALA(Algorithm):
    config_class = IMPALAConfig
    learner_class = IMPALALearner

    async_learning: AsyncLearning | None = None

    def build_algorithm_state(self) -> None:
        if self.async_learning is not None:  # reset_config: the last trial's thread
            self.async_learning.stop()
        self.async_learning = AsyncLearning(self)

    def training_step(self) -> dict[str, Any]:
        """The asynchronous step IMPALA and APPO share (`AsyncLearning.training_step`):
        sample what the runners have ready; a learner update, in the background thread
        when there is one (V-trace with the current policy, minibatch SGD);
        report the updates that finished and broadcast their weights."""
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
