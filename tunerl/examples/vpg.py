"""Vanilla policy gradient (REINFORCE with reward-to-go, Williams 1992) on tunerl's public API."""

import numpy as np
import torch

from tunerl import Algorithm, AlgorithmConfig, Learner, SampleBatch
from tunerl.core.config import Field, with_defaults
from tunerl.core.postprocessing import compute_gae, trajectory_ends
from tunerl.execution import synchronous_parallel_sample, train_one_step

# One gradient step on the whole batch per update: minibatches larger than any batch.
_DEFAULTS = {"lr": 1e-2, "minibatch_size": 10**6, "train_batch_size_per_learner": 10**6}


class VPGConfig(AlgorithmConfig):
    FIELDS = {
        **with_defaults(AlgorithmConfig.FIELDS, _DEFAULTS),
        "episodes_per_batch": Field("training", 16, "Whole episodes per update.", (int,), low=1),
    }

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or VPG)


def vpg_loss(module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """-mean(log pi(a|s) * A), A the reward-to-go normalized over the batch (a baseline)."""
    dist = module.get_action_dist_cls()(module.forward_train(batch)["action_dist_inputs"])
    returns = batch[SampleBatch.ADVANTAGES]
    advantages = (returns - returns.mean()) / (returns.std() + 1e-8)
    loss = -(dist.logp(batch[SampleBatch.ACTIONS]) * advantages).mean()
    return loss, {"policy_loss": loss.detach(), "entropy": dist.entropy().mean().detach()}


class VPGLearner(Learner):
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return vpg_loss(self.module, batch)


class VPG(Algorithm):
    config_class, learner_class = VPGConfig, VPGLearner

    def training_step(self) -> dict:
        batch = synchronous_parallel_sample(
            worker_set=self.env_runner_group, max_episodes=self.config.episodes_per_batch
        )
        # Reward-to-go is GAE with lambda = 1 and no critic (V = 0), on whole episodes.
        zeros, ends = np.zeros(len(batch)), trajectory_ends(batch)
        terminateds = batch[SampleBatch.TERMINATEDS]
        batch[SampleBatch.ADVANTAGES], _ = compute_gae(
            batch[SampleBatch.REWARDS], zeros, zeros, terminateds, ends, self.config.gamma, 1.0
        )
        results = train_one_step(self, batch)  # {"learners": {"default_policy": stats}}
        self.sync_weights()  # one ray.put, the reference to every runner
        return results
