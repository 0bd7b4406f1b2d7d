"""MARWIL (Wang et al. 2018, "Exponentially Weighted Imitation Learning for Batched Historical
Data"): behaviour cloning weighted by exp(beta * advantage), the advantage the recorded
discounted return minus a learned value, scaled by the running root mean square of the
advantages. beta = 0 is behaviour cloning. Trains on files and samples no env.
In the order of the algorithm: config -> loss -> learner -> training_step."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.checkpoint_io import json_numbers_per_module
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
from tunerl.core.rl_module import RLModule
from tunerl.offline.offline_data import RETURNS, OfflineData

# ----------------------------------------------------------------------------- config
_MARWIL_DEFAULTS = {
    # RLlib's MARWIL.
    "lr": 1e-4,
    "train_batch_size_per_learner": 2000,
    "min_train_timesteps_per_iteration": 20_000,
}


class MARWILConfig(AlgorithmConfig, LRFields, OfflineInputFields):
    """MARWIL's settings: AlgorithmConfig's, the learning rate, reading, and the fields
    below (RLlib's names and defaults)."""

    # fmt: off
    beta: float = field("training", 1.0,
        "Temperature of the advantage weights exp(beta * A / sqrt(mean A^2)); 0 is "
        "behaviour cloning.", *NUMBER, low=0)
    vf_coeff: float = field("training", 1.0,
        "Weight of the value loss 0.5 * mean((return - V)^2).", *NUMBER, low=0)
    moving_average_sqd_adv_norm_start: float = field("training", 100.0,
        "Starting value of the running mean of squared advantages.",
        *NUMBER, low=0, low_exclusive=True)
    moving_average_sqd_adv_norm_update_rate: float = field("training", 1e-8,
        "Step of that running mean towards each batch's mean squared advantage.",
        *NUMBER, low=0, high=1)
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
            _MARWIL_DEFAULTS,
        ),
        **own_fields(locals()),
    }

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or MARWIL)


# ------------------------------------------------------------------------------- loss
def marwil_loss(
    module: RLModule,
    batch: dict[str, torch.Tensor],
    beta: float,
    vf_coeff: float,
    sqd_adv_norm: float,
    sqd_adv_norm_update_rate: float,
) -> tuple[LossOutput, float]:
    """-mean(exp(beta * A / sqrt(norm)) * log pi(a|s)) + vf_coeff * 0.5 * mean(A^2) with
    A = return - V(s) (the weights carry no gradient), where norm is `sqd_adv_norm` moved
    by `sqd_adv_norm_update_rate` towards this batch's mean(A^2) (as RLlib: before it
    weighs). Returns the loss and that moved norm."""
    out = module.forward_train(batch)
    dist = module.get_action_dist_cls()(out[c.ACTION_DIST_INPUTS])
    logp = dist.logp(batch[c.ACTIONS])
    advantages = batch[RETURNS] - out[c.VF_PREDS]
    mean_sqd_advantage = float(advantages.detach().pow(2).mean())
    norm = sqd_adv_norm + sqd_adv_norm_update_rate * (mean_sqd_advantage - sqd_adv_norm)
    if beta == 0.0:
        weights = torch.ones_like(logp)
    else:
        # 1e-8: RLlib's guard against a zero norm.
        weights = torch.exp(beta * advantages.detach() / (1e-8 + norm**0.5))
    policy_loss = -(weights * logp).mean()
    vf_loss = 0.5 * advantages.pow(2).mean()
    stats = {
        m.POLICY_LOSS: policy_loss.detach(),
        m.VF_LOSS: vf_loss.detach(),
        m.MOVING_AVG_SQD_ADV_NORM: norm,
    }
    return LossOutput(policy_loss + vf_coeff * vf_loss, stats), norm


class MARWILLearner(Learner):
    """One gradient step per batch; keeps each module's running mean of squared advantages
    (in its checkpointed state)."""

    LOSS_COLUMNS = (c.OBS, c.ACTIONS, RETURNS)

    def __init__(self, config: Any, module: Any, seed: int):
        super().__init__(config, module, seed)
        start = float(config.moving_average_sqd_adv_norm_start)
        self.sqd_adv_norms = {module_id: start for module_id in self.module.keys()}

    def compute_loss_for_module(self, module_id: str, batch: dict[str, torch.Tensor]) -> LossOutput:
        config = self.config
        out, self.sqd_adv_norms[module_id] = marwil_loss(
            self.module[module_id],
            batch,
            config.beta,
            config.vf_coeff,
            self.sqd_adv_norms[module_id],
            config.moving_average_sqd_adv_norm_update_rate,
        )
        return out

    def get_extra_state(self) -> dict[str, Any]:
        return {"sqd_adv_norm": dict(self.sqd_adv_norms)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.sqd_adv_norms = json_numbers_per_module(
            state, "sqd_adv_norm", float, self.sqd_adv_norms, "learner state"
        )


# ----------------------------------------------------------------------- training_step
class MARWIL(Algorithm):
    config_class = MARWILConfig
    learner_class = MARWILLearner

    @property
    def samples_from_env(self) -> bool:
        return False

    def build_algorithm_state(self) -> None:
        self.data = OfflineData.for_modules(
            self.config, self.module_spec, self.draw_seed(), returns_gamma=self.config.gamma
        )

    def training_step(self) -> dict[str, Any]:
        # 1. read a shuffled batch of each module's recorded rows, each with its discounted return
        # 2. learn (evaluation sends the weights to its runners itself)
        return self.train_on_batch(self.data.sample_batch(self.config.train_batch_size_per_learner))

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.data.reseed(self.draw_seed())
