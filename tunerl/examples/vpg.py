"""REINFORCE with returns-to-go (Williams 1992): a postprocessing and a loss, the rest default."""

import numpy as np
import torch

from tunerl import Algorithm, AlgorithmConfig, Learner, LossOutput, SampleBatch
from tunerl.core import columns as c
from tunerl.core.fields import LR_FIELDS, LRFields, field, own_fields, with_defaults
from tunerl.core.postprocessing import compute_gae, trajectory_ends


class VPGConfig(AlgorithmConfig, LRFields):
    baseline: bool = field("training", True, "Centre and scale the returns over the batch.", bool)
    _tuned = {"lr": 5e-3, "num_envs_per_env_runner": 8, "train_batch_size_per_learner": 2000}
    FIELDS = with_defaults({**AlgorithmConfig.FIELDS, **LR_FIELDS, **own_fields(locals())}, _tuned)

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or VPG)


class VPGLearner(Learner):
    def postprocess_batch(self, module_id: str, batch: SampleBatch) -> SampleBatch:
        """Returns-to-go: GAE with V = 0, lambda = 1 (no critic: a fragment's cut ends them)."""
        done, zeros, gamma = batch[c.TERMINATEDS], np.zeros(len(batch)), self.config.gamma
        ends = trajectory_ends(batch)
        batch[c.ADVANTAGES] = compute_gae(batch[c.REWARDS], zeros, zeros, done, ends, gamma, 1)[0]
        return batch

    def compute_loss_for_module(self, module_id: str, batch: dict[str, torch.Tensor]) -> LossOutput:
        module, returns = self.module[module_id], batch[c.ADVANTAGES]
        if self.config.baseline:  # a constant baseline: less variance, the same expected gradient
            returns = (returns - returns.mean()) / (returns.std() + 1e-8)
        dist = module.get_action_dist_cls()(module.forward_train(batch)[c.ACTION_DIST_INPUTS])
        loss = -(dist.logp(batch[c.ACTIONS]) * returns).mean()
        stats = {"policy_loss": loss.item(), "entropy": dist.entropy().mean().item()}
        return LossOutput(loss, stats)


class VPG(Algorithm):
    config_class, learner_class = VPGConfig, VPGLearner
