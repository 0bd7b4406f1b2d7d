"""A2C (Mnih et al. 2016): n-step advantages, an actor-critic loss and RMSprop, the rest default."""

import torch

from tunerl import Algorithm, AlgorithmConfig, Learner, LossOutput, SampleBatch
from tunerl.core import columns as c
from tunerl.core import fields as f
from tunerl.core.postprocessing import add_gae


class A2CConfig(AlgorithmConfig, f.LRFields, f.PolicyGradientFields):
    FIELDS = {**AlgorithmConfig.FIELDS, **f.LR_FIELDS, **f.POLICY_GRADIENT_FIELDS}
    _tuned = {"lr": 1e-3, "grad_clip": 0.5, "num_envs_per_env_runner": 16}  # x 8 steps per update
    FIELDS = f.with_defaults(FIELDS, {**_tuned, "train_batch_size_per_learner": 128})

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or A2C)


class A2CLearner(Learner):
    def configure_optimizers_for_module(self, module_id: str) -> None:
        rmsprop = torch.optim.RMSprop(self.module[module_id].parameters(), alpha=0.99, eps=1e-5)
        self.register_optimizer(module_id, "default", rmsprop, lr_or_lr_schedule=self.config.lr)

    def postprocess_batch(self, module_id: str, batch: SampleBatch) -> SampleBatch:
        return add_gae(batch, self.module[module_id], self.config.gamma, 1.0)  # n-step returns

    def compute_loss_for_module(self, module_id: str, batch: dict[str, torch.Tensor]) -> LossOutput:
        out, config = self.module[module_id].forward_train(batch), self.config
        dist = self.module[module_id].get_action_dist_cls()(out[c.ACTION_DIST_INPUTS])
        policy_loss = -(dist.logp(batch[c.ACTIONS]) * batch[c.ADVANTAGES]).mean()
        vf_loss = (out[c.VF_PREDS] - batch[c.VALUE_TARGETS]).pow(2).mean()
        entropy = dist.entropy().mean()
        loss = policy_loss + config.vf_loss_coeff * vf_loss - config.entropy_coeff * entropy
        stats = {"policy_loss": policy_loss, "vf_loss": vf_loss, "entropy": entropy}
        return LossOutput(loss, {name: value.item() for name, value in stats.items()})


class A2C(Algorithm):
    config_class, learner_class = A2CConfig, A2CLearner
