"""IMPALA (Espeholt et al. 2018): runners sample asynchronously with slightly stale weights,
and V-trace corrects the learner's targets for the lag. In the order of the algorithm:
config -> loss -> learner -> training_step. APPO (`tunerl.algorithms.appo`) shares the
training step and the sampler through the plain functions here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tunerl.algorithms.ppo.ppo import PPOConfig
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.async_sampling import SAMPLE_WAIT_TIMER, AsyncSampler, request_timesteps
from tunerl.core.config import NUMBER, AlgorithmConfig, Field, _f, with_defaults
from tunerl.core.learner import Learner
from tunerl.core.rl_module import RLModule
from tunerl.core.sample_batch import SampleBatch
from tunerl.core.vtrace import add_vtrace

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


class IMPALAConfig(AlgorithmConfig):
    """IMPALA's settings: AlgorithmConfig's plus the training fields below. With
    `num_env_runners=0` the algorithm samples in its own process, synchronously (correct,
    on-policy, not asynchronous); with N > 0 the runners sample while the learner trains."""

    FIELDS: dict[str, Field] = {
        **with_defaults(
            {
                **AlgorithmConfig.FIELDS,
                "vf_loss_coeff": PPOConfig.FIELDS["vf_loss_coeff"],
                "entropy_coeff": PPOConfig.FIELDS["entropy_coeff"],
            },
            _IMPALA_DEFAULTS,
        ),
        "vtrace_clip_rho_threshold": _f(
            "training",
            1.0,
            "V-trace's rho-bar: clip of the importance ratio in the value targets "
            "(Espeholt et al. 2018, eq. 1).",
            *NUMBER,
            low=0,
            low_exclusive=True,
        ),
        "vtrace_clip_pg_rho_threshold": _f(
            "training",
            1.0,
            "Clip of the importance ratio that weights the policy-gradient advantage.",
            *NUMBER,
            low=0,
            low_exclusive=True,
        ),
        "broadcast_interval": _f(
            "training",
            1,
            "Learner updates between weight broadcasts to the remote env runners.",
            int,
            low=1,
        ),
    }

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or IMPALA)


# ------------------------------------------------------------------------------- loss
def explained_variance(targets: torch.Tensor, values: torch.Tensor) -> float:
    """1 - Var(targets - values) / Var(targets); 0 when the targets do not vary."""
    with torch.no_grad():
        target_var = targets.var()
        return float(1 - (targets - values).var() / target_var) if target_var > 0 else 0.0


def impala_loss(
    module: RLModule, batch: dict[str, torch.Tensor], config: IMPALAConfig
) -> tuple[torch.Tensor, dict[str, Any]]:
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
    return loss, {
        m.POLICY_LOSS: policy_loss.detach(),
        m.VF_LOSS: vf_loss.detach(),
        m.ENTROPY: entropy.detach(),
        m.VF_EXPLAINED_VAR: explained_variance(targets, values),
    }


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

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return impala_loss(self.module, batch, self.config)

    def update(self, batch: SampleBatch, num_env_steps_sampled_lifetime: int = 0) -> dict:
        config = self.config
        add_vtrace(
            batch,
            self.module,
            policy_logp(self.module, batch),
            config.gamma,
            config.vtrace_clip_rho_threshold,
            config.vtrace_clip_pg_rho_threshold,
        )
        return super().update(batch, num_env_steps_sampled_lifetime)


# ----------------------------------------------------------------------- training_step
def build_sampler(algo: Algorithm) -> None:
    """`algo.async_sampler`: an AsyncSampler over the remote runners, or None when the
    algorithm samples in its own process (num_env_runners=0)."""
    group = algo.env_runner_group
    runners = group.remote_runners()
    algo.async_sampler = None
    if runners:
        algo.async_sampler = AsyncSampler(
            group, request_timesteps(algo.config, len(runners)), algo.config.broadcast_interval
        )


def vtrace_training_step(algo: Algorithm) -> dict[str, Any]:
    """One learner update on at least `train_batch_size_per_learner` env steps: sampled
    now by the local runner, or what the remote runners have ready (they go on sampling
    while the learner trains)."""
    config, sampler = algo.config, algo.async_sampler
    # 1. sample
    if sampler is None:
        batch = algo.sample_from_runners(config.train_batch_size_per_learner)
    else:
        waited_before = sampler.wait_s
        with algo._timer(m.SAMPLE_TIMER):
            batches: list[SampleBatch] = []
            while sum(len(b) for b in batches) < config.train_batch_size_per_learner:
                batches += sampler.collect(config.sample_timeout_s)
            batch = SampleBatch.concat_samples(batches)
        algo._timers[SAMPLE_WAIT_TIMER] += sampler.wait_s - waited_before
        algo.callbacks.on_sample_end(algorithm=algo, samples=batch)
    # 2. learn
    with algo._timer(m.LEARN_TIMER):
        sampled = algo._counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        stats = algo.learner.update(batch, sampled)
        algo.count_trained_steps(len(batch))
        algo.learner.module.update_observation_filter(batch[c.OBS])
    # 3. sync: free for the local runner (it acts with the learner's module); remote
    # runners get the weights every broadcast_interval updates, without waiting for them.
    if sampler is None:
        algo._sync_weights()
    else:
        with algo._timer(m.SYNC_TIMER):
            sampler.weights_updated(algo.learner.module)
    return {m.LEARNER_RESULTS: {c.DEFAULT_MODULE_ID: stats}}


class IMPALA(Algorithm):
    config_class = IMPALAConfig
    learner_class = IMPALALearner

    def build_algorithm_state(self) -> None:
        build_sampler(self)

    def training_step(self) -> dict[str, Any]:
        return vtrace_training_step(self)

    def set_extra_state(self, state: dict[str, Any]) -> None:
        # A restore: runners start fresh episodes, so samples in flight are not wanted.
        if self.async_sampler is not None:
            self.async_sampler.forget_requests()
