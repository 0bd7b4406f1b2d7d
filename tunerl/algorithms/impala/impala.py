"""IMPALA (Espeholt et al. 2018): runners sample asynchronously with slightly stale weights,
and V-trace corrects the learner's targets for the lag. In the order of the algorithm:
config -> loss -> learner -> training_step. APPO (`tunerl.algorithms.appo`) shares the
training step and the sampler through the plain functions here.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from tunerl.algorithms.ppo.ppo import PPOConfig
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.async_sampling import AsyncSampler, request_timesteps
from tunerl.core.config import NUMBER, AlgorithmConfig, Field, _f, with_defaults
from tunerl.core.learner import Learner, LossOutput, minibatch_sgd
from tunerl.core.learner_thread import LearnerThread
from tunerl.core.losses import explained_variance
from tunerl.core.rl_module import RLModule
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch, concat_samples
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
        "learner_queue_size": _f(
            "training",
            1,
            "With remote env runners: train batches handed to the learner thread that may "
            "still wait or train when training_step returns, while the driver collects the "
            "next (0: learn in the driver's thread, no overlap).",
            int,
            low=0,
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
def build_sampler(algo: Algorithm) -> None:
    """`algo.async_sampler`: an AsyncSampler over the remote runners, or None when the
    algorithm samples in its own process (num_env_runners=0); and `algo.learner_thread` when
    remote runners sample and `learner_queue_size > 0`. A thread left from the previous
    trial (reset_config) is stopped first."""
    stop_learner_thread(algo)
    group = algo.env_runner_group
    runners = group.remote_runners()
    algo.async_sampler = None
    algo.unreported_learner_stats = []
    if runners:
        use_thread = algo.config.learner_queue_size > 0
        algo.async_sampler = AsyncSampler(
            group,
            request_timesteps(algo.config, len(runners)),
            algo.config.broadcast_interval,
            request_after_update=use_thread,
        )
        if use_thread:
            algo.learner_thread = LearnerThread(
                partial(learn_on_batch, algo.learner),
                algo.learner.module.get_state,
                algo.config.learner_queue_size,
            )


def stop_learner_thread(algo: Algorithm) -> None:
    thread = getattr(algo, "learner_thread", None)
    if thread is not None:
        thread.stop()
    algo.learner_thread = None


def learn_on_batch(
    learner: Learner, batch: MultiAgentBatch, num_env_steps_sampled: int
) -> dict[str, dict[str, Any]]:
    """One learner update, then the observation filters take the batch's observations (so
    the batch was trained with the statistics it was sampled with)."""
    results = learner.update(batch, num_env_steps_sampled)
    learner.update_observation_filters(batch)
    return results


def take_learner_outputs(algo: Algorithm, max_unfinished: int) -> None:
    """Takes the learner thread's finished updates (waiting for the oldest while more than
    `max_unfinished` are queued or training): counts their rows as trained, broadcasts their
    weights to the runners and keeps their statistics for the next report."""
    with algo.timer(m.LEARNER_WAIT_TIMER):
        outputs = algo.learner_thread.take(max_unfinished)
    for output in outputs:
        algo.count_trained_steps(output.num_rows)
        algo.add_time(m.LEARN_TIMER, output.learn_s)
        algo.unreported_learner_stats.append(output.stats)
        with algo.timer(m.SYNC_TIMER):
            algo.async_sampler.weights_updated(lambda weights=output.weights: weights)


def drain_learner(algo: Algorithm) -> None:
    """Waits for the learner thread to train every batch it was given, so the learner's
    state can be read or replaced; a no-op without a thread."""
    if getattr(algo, "learner_thread", None) is not None:
        take_learner_outputs(algo, max_unfinished=0)


def mean_stats(results: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each module's mean of each statistic over several updates' `{module_id: stats}`."""
    per_module: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        for module_id, stats in result.items():
            per_module.setdefault(module_id, []).append(stats)
    return {
        module_id: {key: float(np.mean([s[key] for s in stats])) for key in stats[0]}
        for module_id, stats in per_module.items()
    }


def sample_async(algo: Algorithm) -> MultiAgentBatch:
    """At least `train_batch_size_per_learner` env steps of what the remote runners have
    ready (they go on sampling meanwhile)."""
    sampler = algo.async_sampler
    waited_before = sampler.wait_s
    with algo.timer(m.SAMPLE_TIMER):
        batches: list[MultiAgentBatch] = []
        while sum(len(b) for b in batches) < algo.config.train_batch_size_per_learner:
            batches += sampler.collect(algo.config.sample_timeout_s)
        batch = concat_samples(batches)
    algo.add_time(m.SAMPLE_WAIT_TIMER, sampler.wait_s - waited_before)
    algo.callbacks.on_sample_end(algorithm=algo, samples=batch)
    return batch


def vtrace_training_step(algo: Algorithm) -> dict[str, Any]:
    """One learner update on at least `train_batch_size_per_learner` env steps: sampled
    now by the local runner, or what the remote runners have ready. With a learner thread
    the update runs in the background: this step reports the updates that finished, which
    lag the batch it hands over by up to `learner_queue_size`."""
    config, sampler, thread = algo.config, algo.async_sampler, algo.learner_thread
    # 1. sample
    if sampler is None:
        batch = algo.sample_from_runners(config.train_batch_size_per_learner)
    else:
        batch = sample_async(algo)
    sampled = algo.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    # 2. learn and 3. sync, in the background
    if thread is not None:
        with algo.timer(m.LEARNER_WAIT_TIMER):
            thread.submit(batch, sampled)
        take_learner_outputs(algo, config.learner_queue_size)
        results = mean_stats(algo.unreported_learner_stats)
        algo.unreported_learner_stats = []
        return {m.LEARNER_RESULTS: results}
    # ... or here
    with algo.timer(m.LEARN_TIMER):
        results = learn_on_batch(algo.learner, batch, sampled)
        algo.count_trained_steps(len(batch))
    if sampler is None:
        algo.sync_weights()  # free: the local runner acts with the learner's module
    else:
        # Weights go out every broadcast_interval updates, without waiting for the runners.
        with algo.timer(m.SYNC_TIMER):
            sampler.weights_updated(algo.learner.module.get_state)
    return {m.LEARNER_RESULTS: results}


class IMPALA(Algorithm):
    config_class = IMPALAConfig
    learner_class = IMPALALearner

    def build_algorithm_state(self) -> None:
        build_sampler(self)

    def training_step(self) -> dict[str, Any]:
        return vtrace_training_step(self)

    # What reads or replaces the learner's state waits for the learner thread first.
    def get_module(self, module_id: str = c.DEFAULT_MODULE_ID) -> RLModule:
        drain_learner(self)
        return super().get_module(module_id)

    def sync_weights(self) -> None:
        drain_learner(self)
        super().sync_weights()

    def _start_evaluation(self):
        drain_learner(self)
        return super()._start_evaluation()

    def save_checkpoint(self, checkpoint_dir: str) -> str:
        drain_learner(self)
        return super().save_checkpoint(checkpoint_dir)

    def load_checkpoint(self, checkpoint: str | dict) -> None:
        drain_learner(self)
        super().load_checkpoint(checkpoint)

    def set_extra_state(self, state: dict[str, Any]) -> None:
        # A restore: runners start fresh episodes, so samples in flight are not wanted.
        self.unreported_learner_stats = []
        if self.async_sampler is not None:
            self.async_sampler.forget_requests()

    def cleanup(self) -> None:
        stop_learner_thread(self)
        super().cleanup()
