"""The asynchronous training step IMPALA and APPO share: `AsyncLearning` owns an
`AsyncSampler` over the remote runners and a `LearnerGroup`, built from the config, and runs
the step through the algorithm's public API only (`sample_from_runners`, `timer`, `add_time`,
`count_trained_steps`, `sync_weights`, `callbacks`):

    batch = sample_async(algo, sampler)                                # 1. sample
    updates = learner_group.update(batch, algo.timestep, async_update=True)  # 2. learn
    record_updates(algo, learner_group, updates, sampler)              # 3. sync
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunerl.core import metrics as m
from tunerl.core.sample_batch import MultiAgentBatch
from tunerl.execution.async_sampling import AsyncSampler
from tunerl.execution.learner_group import LearnerGroup
from tunerl.execution.learner_thread import LearnerUpdate

if TYPE_CHECKING:
    from tunerl.core.algorithm import Algorithm


def build_async_learning(algo: Algorithm) -> tuple[AsyncSampler | None, LearnerGroup]:
    """An AsyncSampler over `algo`'s remote runners (None with num_env_runners=0: the
    algorithm then samples in its own process, synchronously, on-policy) and a LearnerGroup
    of `algo.learner`, with a learner thread when remote runners sample and
    `learner_queue_size > 0`."""
    config, group = algo.config, algo.env_runner_group
    if not group.remote_runners():
        return None, LearnerGroup(algo.learner)
    use_thread = config.learner_queue_size > 0
    sampler = AsyncSampler(
        group,
        config.env_steps_per_sample(),
        config.broadcast_interval,
        request_after_update=use_thread,
    )
    return sampler, LearnerGroup(algo.learner, queue_size=config.learner_queue_size)


def sample_async(algo: Algorithm, sampler: AsyncSampler) -> MultiAgentBatch:
    """At least `train_batch_size_per_learner` env steps of what the remote runners have
    ready (they go on sampling meanwhile), timed under `timers/sample` (the seconds with
    nothing ready also under `timers/sample_wait`)."""
    config = algo.config
    waited_before = sampler.wait_s
    with algo.timer(m.SAMPLE_TIMER):
        batch = sampler.sample(config.train_batch_size_per_learner, config.sample_timeout_s)
    algo.add_time(m.SAMPLE_WAIT_TIMER, sampler.wait_s - waited_before)
    algo.callbacks.on_sample_end(algorithm=algo, samples=batch)
    return batch


def record_updates(
    algo: Algorithm,
    learner_group: LearnerGroup,
    updates: list[LearnerUpdate],
    sampler: AsyncSampler | None,
) -> None:
    """Counts the env steps each finished update trained and its seconds (`timers/learn`;
    the driver's seconds blocked on the learner thread under `timers/learner_wait`), and
    tells `sampler` of each update, which broadcasts its weights every
    `broadcast_interval` updates without waiting for the runners (`timers/sync`)."""
    if learner_group.has_thread:
        algo.add_time(m.LEARNER_WAIT_TIMER, learner_group.pop_wait_s())
    for update in updates:
        algo.count_trained_steps(update.num_env_steps)
        algo.add_time(m.LEARN_TIMER, update.learn_s)
        if sampler is not None:
            with algo.timer(m.SYNC_TIMER):
                sampler.weights_updated(update.get_weights)


def drain_learner_group(
    algo: Algorithm, learner_group: LearnerGroup, sampler: AsyncSampler | None
) -> None:
    """Waits until the learner thread trained every batch it was given and records those
    updates, so the learner's state can be read or replaced; their results are reported by
    the next training step. A no-op without a thread."""
    record_updates(algo, learner_group, learner_group.drain(), sampler)


class AsyncLearning:
    """An algorithm's asynchronous sampling and learning: `sampler` (None with
    num_env_runners=0: the local runner samples, synchronously) and `learner_group` (with a
    learner thread when remote runners sample and `learner_queue_size > 0`)."""

    def __init__(self, algo: Algorithm):
        self.sampler, self.learner_group = build_async_learning(algo)

    def training_step(self, algo: Algorithm) -> dict[str, Any]:
        """One learner update on at least `train_batch_size_per_learner` env steps. With a
        learner thread the update runs in the background: the step reports the updates
        that finished, which lag the batch it hands over by up to `learner_queue_size`."""
        # 1. sample: the local runner's batch now, or what the remote runners have ready
        if self.sampler is None:
            batch = algo.sample_from_runners(algo.config.train_batch_size_per_learner)
        else:
            batch = sample_async(algo, self.sampler)
        # 2. learn: here, or in the learner thread (then: the updates that finished meanwhile)
        updates = self.learner_group.update(batch, algo.timestep, async_update=True)
        # 3. sync: count what each finished update trained, send its weights to the runners
        record_updates(algo, self.learner_group, updates, self.sampler)
        if self.sampler is None:
            algo.sync_weights()  # free: the local runner acts with the learner's module
        return {m.LEARNER_RESULTS: self.learner_group.pop_results()}

    def wait(self, algo: Algorithm) -> None:
        """Waits for the learner thread (`Algorithm.wait_for_learner`)."""
        drain_learner_group(algo, self.learner_group, self.sampler)

    def forget(self) -> None:
        """After a restore: runners start fresh episodes, so samples in flight are not
        wanted, nor the results of updates before it."""
        self.learner_group.pop_results()
        if self.sampler is not None:
            self.sampler.forget_requests()

    def stop(self) -> None:
        self.learner_group.stop()
