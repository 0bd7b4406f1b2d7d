"""Soft Actor-Critic (Haarnoja et al. 2018, "SAC Algorithms and Applications"): twin Q
critics with Polyak-averaged targets, a squashed-Gaussian actor, and automatic entropy
tuning. In the order of the algorithm: config -> learner -> training_step; the losses, which
CQL shares, are in `tunerl.core.soft_actor_critic_losses`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import gymnasium as gym
import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.algorithm import Algorithm
from tunerl.core.checkpoint_io import CheckpointReader, json_number
from tunerl.core.checkpoint_layout import STATE_FILE
from tunerl.core.config import AlgorithmConfig
from tunerl.core.fields import (
    NUMBER,
    REPLAY_FIELDS,
    TARGET_NETWORK_FIELDS,
    ConfigError,
    Field,
    ReplayFields,
    field,
    own_fields,
    with_defaults,
)
from tunerl.core.learner import Learner
from tunerl.core.off_policy import ReplayState
from tunerl.core.rl_module import RLModuleSpec
from tunerl.core.rl_module.soft_actor_critic import SACModule
from tunerl.core.sample_batch import SampleBatch
from tunerl.core.soft_actor_critic_losses import (
    DISCRETE_TARGET_ENTROPY_SCALE,
    actor_and_alpha_losses,
    critic_loss,
    register_soft_actor_critic_optimizers,
    target_entropy,
)

# ----------------------------------------------------------------------------- config
_SAC_DEFAULTS = {
    # Defaults that solve Pendulum-v1 untuned.
    "gamma": 0.98,
    "num_envs_per_env_runner": 1,
    "rollout_fragment_length": 1,
    "train_batch_size_per_learner": 256,
    # One update of 256 replayed transitions per sampled env step, from step 100.
    "training_intensity": 256.0,
    "num_steps_sampled_before_learning_starts": 100,
    # As RLlib's SAC: a result every 100 env steps, so a stop criterion is checked that often
    # (with 1000, runs that reached -250 on Pendulum went on for up to 1000 more steps).
    "min_sample_timesteps_per_iteration": 100,
    # Small critics: on a 2-core CPU the per-update cost decides the wall time (README).
    "model_config": {"fcnet_hiddens": [64, 64], "fcnet_activation": "relu"},
}


def _check_target_entropy(value: Any) -> str | None:
    if value == "auto" or (isinstance(value, int | float) and not isinstance(value, bool)):
        return None
    return "must be 'auto' or a number"


class SACConfig(AlgorithmConfig, ReplayFields):
    """SAC's settings: AlgorithmConfig's, the replay buffer's (`tunerl.core.fields`), and the
    fields below (no `lr`: actor, critics and alpha each have their own)."""

    # fmt: off
    actor_lr: float = field("training", 1e-3,
        "Actor learning rate.", *NUMBER, low=0, low_exclusive=True)
    # 3e-3 with learning from step 100: Pendulum-v1 seeds 1-10 reached -250 (last 20
    # episodes) at 4,800-5,200 env steps, against 5,200-6,400 with 1e-3 from step 500.
    # Either change alone gained less than half of that.
    critic_lr: float = field("training", 3e-3,
        "Critics' learning rate.", *NUMBER, low=0, low_exclusive=True)
    alpha_lr: float = field("training", 1e-3,
        "Entropy temperature's learning rate.", *NUMBER, low=0, low_exclusive=True)
    target_entropy: float | Literal["auto"] = field("training", "auto",
        "Entropy the temperature aims for; 'auto' is minus the action dimension (Box), "
        f"or {DISCRETE_TARGET_ENTROPY_SCALE} log(number of actions) (Discrete).",
        check=_check_target_entropy)
    initial_alpha: float = field("training", 1.0,
        "Starting entropy temperature.", *NUMBER, low=0, low_exclusive=True)
    # The target critics move by tau after every update (no hard copies: no update freq).
    tau: float = TARGET_NETWORK_FIELDS["tau"]
    # fmt: on

    # n_step 3 (REPLAY_FIELDS' default): on Pendulum-v1 (then with critic_lr 1e-3 from step
    # 500), seeds 1-5 reached -250 (last 20 episodes) at 5,400-6,000 env steps, against
    # 6,600-7,400 with one-step returns (seeds 1-3); 2 and 4 were no faster.
    FIELDS: ClassVar[dict[str, Field]] = {
        **with_defaults({**AlgorithmConfig.FIELDS, **REPLAY_FIELDS}, _SAC_DEFAULTS),
        **own_fields(locals()),
    }

    def __init__(self, algo_class: type[Algorithm] | None = None):
        super().__init__(algo_class=algo_class or SAC)

    def validate(self) -> None:
        super().validate()
        spec_config = (self.rl_module_spec.model_config if self.rl_module_spec else None) or {}
        hiddens = {**self.model_config, **spec_config}.get("fcnet_hiddens")
        if hiddens is not None and len(hiddens) == 0:
            # The actor's heads and the stacked critics are built on a hidden layer.
            raise ConfigError(
                "model_config['fcnet_hiddens']=[]: SAC's actor and critics need at least one "
                "hidden layer; give one or more positive widths, e.g. [256, 256]."
            )


def upgrade_critic_moments(state: dict, num_params: int) -> dict:
    """The critic optimizer's state of a checkpoint with separate critics (tunerl 0.1.0:
    weight, bias per layer of Q1, then of Q2) in the stacked critics' order (every layer's
    stacked weight, then every stacked bias); any other state is returned as it is."""
    if len(state["exp_avg"]) != 2 * num_params:
        return state
    upgraded = dict(state)
    for key in ("exp_avg", "exp_avg_sq"):
        old = state[key]
        q1, q2 = old[:num_params], old[num_params:]
        weights = [torch.stack([a.T, b.T]).contiguous() for a, b in zip(q1[0::2], q2[0::2])]
        biases = [torch.stack([a, b]).unsqueeze(1) for a, b in zip(q1[1::2], q2[1::2])]
        upgraded[key] = weights + biases
    return upgraded


class SACLearner(Learner):
    """Three named optimizers per module (actor, critic, alpha, each at its own lr); one
    critic step, then one actor and alpha step per replayed batch, then the target update
    (the order of SB3's `SAC.train` and CleanRL's: the actor sees the updated critics)."""

    def configure_optimizers_for_module(self, module_id: str) -> None:
        config = self.config
        register_soft_actor_critic_optimizers(
            self, module_id, config.actor_lr, config.critic_lr, config.alpha_lr
        )

    def target_entropy(
        self, module_id: str, obs: torch.Tensor | None = None
    ) -> float | torch.Tensor:
        """The temperature's target: one number, or with action masks and a batch of
        observations `obs`, one per state (over its legal actions)."""
        module = self.module[module_id]
        masked = obs is not None and module.action_mask is not None
        legal = module.legal_actions(obs) if masked else None
        return target_entropy(self.config.target_entropy, module.action_space, legal)

    def update_module(self, module_id: str, batch: SampleBatch) -> dict[str, Any]:
        module, tensors = self.module[module_id], self.to_tensors(batch)
        # Noise from the learner's own checkpointed stream, not torch's global one.
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(self.rng.integers(2**62)))
        critic = critic_loss(module, tensors, generator)
        self.apply_gradients(module_id, critic.loss, ["critic"])
        actor_loss, alpha_loss, actor_stats = actor_and_alpha_losses(
            module, tensors, self.target_entropy(module_id, tensors[c.OBS]), generator
        )
        # Disjoint parameters: one backward serves both.
        self.apply_gradients(module_id, actor_loss + alpha_loss, ["actor", "alpha"])
        module.update_targets(self.config.tau)
        stats = {key: float(value) for key, value in {**critic.stats, **actor_stats}.items()}
        stats[m.TD_ERRORS] = critic.td_errors.cpu().numpy()
        return stats

    def set_state(self, state: dict[str, Any]) -> None:
        # The critic moments of a checkpoint with separate critics, in the stacked order.
        for module_id, optimizers in state["optimizers"].items():
            critic = self.get_optimizer(module_id, "critic")
            optimizers["critic"] = upgrade_critic_moments(optimizers["critic"], len(critic.params))
        super().set_state(state)


# ----------------------------------------------------------------------- training_step
class SAC(Algorithm):
    config_class = SACConfig
    learner_class = SACLearner

    def default_module_spec(
        self, module_id: str, observation_space: gym.Space, action_space: gym.Space
    ) -> RLModuleSpec:
        spec = super().default_module_spec(module_id, observation_space, action_space)
        if spec.module_class is None:
            spec.module_class = SACModule
        spec.model_config = {"initial_alpha": self.config.initial_alpha, **spec.model_config}
        return spec

    def build_algorithm_state(self) -> None:
        self.replay = ReplayState(self.config, self.learner.module.keys(), self.draw_seed)

    def training_step(self) -> dict[str, Any]:
        config = self.config
        # 1. sample, as n-step transitions into the buffers
        batch = self.sample_from_runners(config.env_steps_per_round())
        self.replay.add(batch)
        sampled = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        results: dict[str, dict[str, Any]] = {}
        # 2. learn: training_intensity replayed transitions per sampled step
        with self.timer(m.LEARN_TIMER):
            for _ in range(self.replay.updates_owed(len(batch), sampled)):
                replayed, slots = self.replay.sample(config.train_batch_size_per_learner)
                results = self.learner.update(replayed, sampled)
                self.replay.update_priorities(slots, results)
                self.count_trained_steps(len(replayed))
            self.learner.update_observation_filters(batch)
        # 3. sync
        self.sync_weights()
        return {m.LEARNER_RESULTS: results}

    def get_extra_state(self) -> dict[str, Any]:
        return {"update_credit": self.replay.update_credit}

    def save_extra_files(self, directory: Path) -> None:
        self.replay.save(directory)

    def load_extra_files(self, reader: CheckpointReader, extra_state: dict[str, Any]) -> dict:
        return {
            "update_credit": json_number(
                extra_state, "update_credit", float, f"{STATE_FILE}: extra", 0.0
            ),
            "replay_buffers": self.replay.read(reader),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.replay.update_credit = state["update_credit"]
        self.replay.restore(state["replay_buffers"], self.draw_seed)
