"""APPO: IMPALA's asynchronous sampling and V-trace with PPO's clipped surrogate against a
target network (Luo et al. 2020, "IMPACT"), as RLlib's APPO computes it. In the order of the
algorithm: config -> loss -> learner -> training_step (IMPALA's).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from tunerl.algorithms.dqn.dqn import DQNConfig
from tunerl.algorithms.impala.impala import IMPALA, IMPALAConfig, explained_variance
from tunerl.algorithms.ppo.ppo import PPOConfig
from tunerl.core import checkpoint_io
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import LEARNER_DIR, Algorithm
from tunerl.core.checkpoint_io import CheckpointError, CheckpointReader, json_number
from tunerl.core.config import Field, with_defaults
from tunerl.core.learner import Learner
from tunerl.core.optim import FlatParameters, polyak_update_
from tunerl.core.rl_module import RLModule
from tunerl.core.sample_batch import SampleBatch
from tunerl.core.vtrace import add_vtrace

# Columns the learner adds: the target network's policy on the batch.
TARGET_LOGP = "target_action_logp"
TARGET_DIST_INPUTS = "target_action_dist_inputs"
TARGET_MODULE_FILE = "target_module_state.pt"
# IMPACT's target-worker clipping (Luo et al. 2020, section 4.1.1; RLlib's
# target_worker_clipping): the behaviour/target ratio is capped at 2.
_TARGET_WORKER_CLIP = 2.0

# ----------------------------------------------------------------------------- config
_APPO_DEFAULTS = {
    # The tuned CartPole experiment's settings (experiments/appo_cartpole.yaml) but gamma:
    # PPO-like reuse of each batch (8 epochs of 256-row minibatches), PPO's clip, and the
    # target network copied after every train batch.
    "lr": 2e-3,
    "num_envs_per_env_runner": 16,
    "train_batch_size_per_learner": 1024,
    "minibatch_size": 256,
    "num_epochs": 8,
    "grad_clip": 0.5,
    "vf_loss_coeff": 1.0,
    "clip_param": 0.2,
    "kl_coeff": 1.0,
    "target_network_update_freq": 1024,
    "tau": 1.0,
}


class APPOConfig(IMPALAConfig):
    """APPO's settings: IMPALA's plus PPO's clip and KL fields and DQN's target-update
    fields. `target_network_update_freq` counts env steps trained; the KL term is
    KL(target || current)."""

    FIELDS: dict[str, Field] = {
        **with_defaults(
            {
                **IMPALAConfig.FIELDS,
                **{k: PPOConfig.FIELDS[k] for k in ("clip_param", "use_kl_loss", "kl_coeff")},
                "kl_target": PPOConfig.FIELDS["kl_target"],
                "target_network_update_freq": DQNConfig.FIELDS["target_network_update_freq"],
                "tau": DQNConfig.FIELDS["tau"],
            },
            _APPO_DEFAULTS,
        ),
    }

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or APPO)


# ------------------------------------------------------------------------------- loss
def appo_loss(
    module: RLModule, batch: dict[str, torch.Tensor], config: APPOConfig, kl_coeff: float
) -> tuple[torch.Tensor, dict[str, Any]]:
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
    advantages = batch[c.ADVANTAGES]
    surrogate = torch.min(
        ratio * advantages,
        ratio.clamp(1 - config.clip_param, 1 + config.clip_param) * advantages,
    )
    policy_loss = -surrogate.mean()
    values, targets = out[c.VF_PREDS], batch[c.VALUE_TARGETS]
    vf_loss = 0.5 * (values - targets).pow(2).mean()
    entropy = dist.entropy().mean()
    mean_kl = dist_cls(batch[TARGET_DIST_INPUTS]).kl(dist).mean()
    loss = policy_loss + config.vf_loss_coeff * vf_loss - config.entropy_coeff * entropy
    if config.use_kl_loss:
        loss = loss + kl_coeff * mean_kl
    return loss, {
        m.POLICY_LOSS: policy_loss.detach(),
        m.VF_LOSS: vf_loss.detach(),
        m.ENTROPY: entropy.detach(),
        m.MEAN_KL_LOSS: mean_kl.detach(),
        m.VF_EXPLAINED_VAR: explained_variance(targets, values),
    }


class APPOLearner(Learner):
    """The target network, V-trace against it, SGD on `appo_loss`, the adaptive KL
    coefficient and the target updates."""

    LOSS_COLUMNS = (
        c.OBS,
        c.ACTIONS,
        c.ACTION_LOGP,
        c.ADVANTAGES,
        c.VALUE_TARGETS,
        TARGET_LOGP,
        TARGET_DIST_INPUTS,
    )

    def __init__(self, config: APPOConfig, module: RLModule, seed: int):
        super().__init__(config, module, seed)
        self.kl_coeff = float(config.kl_coeff)
        self.target_module = copy.deepcopy(self.module).requires_grad_(False)
        self._online = FlatParameters(self.module.parameters())
        self._target = FlatParameters(self.target_module.parameters())
        self.steps_since_target_update = 0

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return appo_loss(self.module, batch, self.config, self.kl_coeff)

    def add_target_policy(self, batch: SampleBatch) -> torch.Tensor:
        """Adds the target network's action distribution and log-probs to `batch`. The
        target uses the online module's observation filter, which moves every update."""
        obs = torch.as_tensor(batch[c.OBS], device=self.device)
        with torch.no_grad():
            inputs = self.target_module._forward_train(self.module._preprocess({c.OBS: obs}))
            inputs = inputs[c.ACTION_DIST_INPUTS]
            actions = torch.as_tensor(batch[c.ACTIONS], device=self.device)
            logp = self.module.get_action_dist_cls()(inputs).logp(actions)
        batch[TARGET_DIST_INPUTS] = inputs.cpu().numpy()
        batch[TARGET_LOGP] = logp.cpu().numpy()
        return logp

    def update(self, batch: SampleBatch, num_env_steps_sampled_lifetime: int = 0) -> dict:
        config = self.config
        logp = self.add_target_policy(batch)
        add_vtrace(
            batch,
            self.module,
            logp.cpu().numpy(),
            config.gamma,
            config.vtrace_clip_rho_threshold,
            config.vtrace_clip_pg_rho_threshold,
        )
        stats = super().update(batch, num_env_steps_sampled_lifetime)
        if config.use_kl_loss:
            # Schulman et al. 2017, section 4, as PPO: grow the penalty when the policy
            # moved too far from the target.
            if stats[m.MEAN_KL_LOSS] > 2.0 * config.kl_target:
                self.kl_coeff *= 1.5
            elif stats[m.MEAN_KL_LOSS] < 0.5 * config.kl_target:
                self.kl_coeff *= 0.5
        stats[m.CURR_KL_COEFF] = self.kl_coeff if config.use_kl_loss else 0.0
        self.steps_since_target_update += len(batch)
        self.update_target()
        return stats

    def update_target(self) -> None:
        """tau < 1: move the target by tau after every update; tau = 1: copy the online
        network once `target_network_update_freq` env steps were trained since the last copy."""
        if self.config.tau < 1.0:
            polyak_update_(self._target, self._online, self.config.tau)
        elif self.steps_since_target_update >= self.config.target_network_update_freq:
            polyak_update_(self._target, self._online, 1.0)
            self.steps_since_target_update = 0

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "kl_coeff": self.kl_coeff,
            "steps_since_target_update": self.steps_since_target_update,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.kl_coeff = json_number(state, "kl_coeff", float, "learner state")
        self.steps_since_target_update = json_number(
            state, "steps_since_target_update", int, "learner state"
        )


# ----------------------------------------------------------------------- training_step
class APPO(IMPALA):
    """IMPALA's training step (as in RLlib, APPO is an IMPALA) with APPO's learner; the
    target network goes into checkpoints beside the learner's state."""

    config_class = APPOConfig
    learner_class = APPOLearner

    def save_extra_files(self, directory: Path) -> None:
        target = self.learner.target_module.get_state()
        checkpoint_io.save_tensors(directory / LEARNER_DIR / TARGET_MODULE_FILE, target)

    def load_extra_files(self, reader: CheckpointReader, extra_state: dict[str, Any]) -> dict:
        name = (LEARNER_DIR / TARGET_MODULE_FILE).as_posix()
        target = reader.tensors(name)
        try:  # on a copy: a target that does not fit changes nothing
            copy.deepcopy(self.learner.target_module).set_state(target)
        except Exception as error:  # noqa: BLE001 - wrong keys or shapes
            raise CheckpointError(
                f"{reader.path(name)} does not fit this algorithm's target network "
                f"({type(error).__name__})."
            ) from None
        return {"impala": super().load_extra_files(reader, extra_state), "target": target}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.learner.target_module.set_state(state["target"])
        super().set_extra_state(state["impala"])
