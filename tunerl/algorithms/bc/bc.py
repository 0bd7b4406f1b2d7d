"""Behaviour cloning: maximize the log-likelihood of the recorded actions (RLlib's BC, which
is MARWIL with beta 0). Trains on files (`offline_data(input_=...)`), samples no env: an
iteration is `min_train_timesteps_per_iteration` trained rows; evaluation runs in the env.
In the order of the algorithm: config -> loss -> learner -> training_step."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.config import AlgorithmConfig
from tunerl.core.fields import (
    LR_FIELDS,
    NOT_ACCEPTED,
    OFFLINE_INPUT_FIELDS,
    Field,
    LRFields,
    OfflineInputFields,
    with_defaults,
    without_sampling_fields,
)
from tunerl.core.learner import Learner, LossOutput
from tunerl.core.rl_module import RLModule
from tunerl.offline.offline_data import OfflineData

# ----------------------------------------------------------------------------- config
_BC_DEFAULTS = {
    # RLlib's BC (MARWILConfig's lr and batch).
    "lr": 1e-4,
    "train_batch_size_per_learner": 2000,
    # An iteration: ten updates, then the evaluation (if due) and a result.
    "min_train_timesteps_per_iteration": 20_000,
}


class BCConfig(AlgorithmConfig, LRFields, OfflineInputFields):
    """BC's settings: AlgorithmConfig's, the learning rate, and reading (`input_`,
    `shuffle_buffer_size`)."""

    # Only sampling reads these (tunerl.core.fields.SAMPLING_ONLY_FIELDS); BC no gamma.
    rollout_fragment_length = min_sample_timesteps_per_iteration = NOT_ACCEPTED
    gamma = NOT_ACCEPTED

    FIELDS: ClassVar[dict[str, Field]] = with_defaults(
        {
            **without_sampling_fields(AlgorithmConfig.FIELDS, "gamma"),
            **LR_FIELDS,
            **OFFLINE_INPUT_FIELDS,
        },
        _BC_DEFAULTS,
    )

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or BC)


# ------------------------------------------------------------------------------- loss
def bc_loss(module: RLModule, batch: dict[str, torch.Tensor]) -> LossOutput:
    """Minus the mean log-likelihood of the recorded actions under the policy."""
    dist = module.get_action_dist_cls()(module.forward_train(batch)[c.ACTION_DIST_INPUTS])
    loss = -dist.logp(batch[c.ACTIONS]).mean()
    return LossOutput(loss, {m.POLICY_LOSS: loss.detach(), m.ENTROPY: dist.entropy().mean()})


class BCLearner(Learner):
    LOSS_COLUMNS = (c.OBS, c.ACTIONS)

    def compute_loss_for_module(self, module_id: str, batch: dict[str, torch.Tensor]) -> LossOutput:
        return bc_loss(self.module[module_id], batch)


# ----------------------------------------------------------------------- training_step
class BC(Algorithm):
    config_class = BCConfig
    learner_class = BCLearner

    @property
    def samples_from_env(self) -> bool:
        return False

    def build_algorithm_state(self) -> None:
        self.data = OfflineData.for_modules(self.config, self.module_spec, self.draw_seed())

    def training_step(self) -> dict[str, Any]:
        # 1. read a shuffled batch of each module's recorded rows
        # 2. learn (evaluation sends the weights to its runners itself: no sync here)
        return self.train_on_batch(self.data.sample_batch(self.config.train_batch_size_per_learner))

    def set_extra_state(self, state: dict[str, Any]) -> None:
        # A restored run reads the data in the order the restored random stream gives.
        self.data.reseed(self.draw_seed())
