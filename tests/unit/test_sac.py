"""SAC: the squashed Gaussian's density (numerical integral, closed-form CDF, torch's own
TransformedDistribution), the losses by hand, Polyak target updates, tiny runs on Pendulum,
actions inside the env's bounds, refusal of discrete actions, and checkpoint round trips."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from tunerl import SAC, SACConfig
from tunerl.algorithms.sac import SACModule, actor_and_alpha_losses, critic_loss
from tunerl.core import checkpoint_io
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.checkpoint_layout import LEARNER_DIR, LEARNER_TENSORS_FILE, MODULE_DIR
from tunerl.core.distributions import TanhGaussian
from tunerl.core.off_policy import buffer_file
from tunerl.core.replay_buffers import N_STEP_DISCOUNT
from tunerl.core.rl_module import MODULE_STATE_FILE, UnsupportedSpaceError


def tiny_sac_config(env: Any = "Pendulum-v1", seed: int = 0, **training: Any) -> SACConfig:
    """Iterations of 100 env steps in fragments of 10, 25 updates of 32 each."""
    settings = {
        "num_steps_sampled_before_learning_starts": 50,
        "train_batch_size_per_learner": 32,
        "training_intensity": 8.0,
        "replay_buffer_config": {"type": "ReplayBuffer", "capacity": 2000},
        "n_step": 1,
        **training,
    }
    return (
        SACConfig()
        .environment(env)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, rollout_fragment_length=10)
        .training(**settings)
        .reporting(min_sample_timesteps_per_iteration=100)
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .debugging(seed=seed)
    )


def normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def dist_inputs(mean, log_std) -> torch.Tensor:
    return torch.tensor([[*mean, *log_std]], dtype=torch.float64)


# ----------------------------------------------------------------- TanhGaussian
# (mean, log_std) of a 1-D squashed Gaussian, with little mass beyond |u| = 7 where the log-prob
# clamps actions to +-(1 - 1e-6).
PARAMS_1D = [(0.0, 0.0), (0.5, -0.5), (-1.0, -1.0), (0.8, 0.3), (0.0, -3.0)]


@pytest.mark.parametrize("mean, log_std", PARAMS_1D)
def test_tanh_gaussian_density_integrates_to_one_and_has_the_right_cdf(mean, log_std):
    dist = TanhGaussian(dist_inputs([mean], [log_std]))
    # A grid in action space, dense where tanh compresses the most (near +-1).
    actions = torch.tanh(torch.linspace(-7.0, 7.0, 400_001, dtype=torch.float64))
    density = dist.logp(actions[:, None]).exp().numpy()
    a = actions.numpy()

    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(a))])

    assert cdf[-1] == pytest.approx(1.0, abs=1e-4)
    # P(a <= x) = P(u <= atanh x) = Phi((atanh x - mean) / std).
    for x in (-0.9, -0.3, 0.0, 0.4, 0.95):
        index = int(np.searchsorted(a, x))
        expected = normal_cdf((np.arctanh(a[index]) - mean) / math.exp(log_std))
        assert cdf[index] == pytest.approx(expected, abs=1e-4), x


def test_tanh_gaussian_samples_follow_the_squashed_normal():
    mean, log_std = 0.4, -0.2
    dist = TanhGaussian(dist_inputs([mean], [log_std]).expand(100_000, 2))
    actions = dist.sample(torch.Generator().manual_seed(0)).numpy()[:, 0]
    assert ((actions > -1) & (actions < 1)).all()
    for x in (-0.5, 0.0, 0.3, 0.8):
        expected = normal_cdf((np.arctanh(x) - mean) / math.exp(log_std))
        assert (actions <= x).mean() == pytest.approx(expected, abs=0.006), x


def test_rsample_log_prob_equals_log_prob_of_the_same_actions():
    torch.manual_seed(0)
    inputs = torch.cat([torch.randn(500, 3) * 0.7, torch.randn(500, 3) * 0.5 - 0.5], dim=-1)
    dist = TanhGaussian(inputs.double())
    actions, logp = dist.rsample_with_logp(torch.Generator().manual_seed(1))
    inside = (actions.abs() < 0.999).all(-1)
    assert inside.float().mean() > 0.9
    torch.testing.assert_close(logp[inside], dist.logp(actions)[inside], rtol=1e-7, atol=1e-7)
    assert logp.shape == (500,)


def test_tanh_gaussian_log_prob_matches_torch_transformed_distribution():
    torch.manual_seed(2)
    mean = torch.randn(200, 2, dtype=torch.float64)
    log_std = torch.randn(200, 2, dtype=torch.float64) * 0.5
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    actions = torch.rand(200, 2, dtype=torch.float64) * 1.98 - 0.99

    logp = TanhGaussian(torch.cat([mean, log_std], dim=-1)).logp(actions)

    torch.testing.assert_close(logp, reference.log_prob(actions).sum(-1), rtol=1e-9, atol=1e-9)


def test_tanh_gaussian_clamps_log_std_and_is_reparameterized():
    dist = TanhGaussian(torch.tensor([[0.0, 0.0, 5.0, -30.0]]))
    torch.testing.assert_close(dist.std, torch.tensor([[math.exp(2.0), math.exp(-20.0)]]))

    inputs = torch.tensor([[0.3, -0.2]], requires_grad=True)
    actions, logp = TanhGaussian(inputs).rsample_with_logp(torch.Generator().manual_seed(0))
    (actions.sum() + logp.sum()).backward()
    assert inputs.grad is not None and (inputs.grad != 0).all()
    torch.testing.assert_close(
        TanhGaussian(inputs.detach()).deterministic_sample(), torch.tanh(torch.tensor([[0.3]]))
    )


# ---------------------------------------------------------------------- the losses
def small_module(seed: int = 0, initial_alpha: float = 0.5) -> SACModule:
    torch.manual_seed(seed)
    return SACModule(
        gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
        gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
        model_config={
            "fcnet_hiddens": [8],
            "fcnet_activation": "relu",
            "initial_alpha": initial_alpha,
        },
    )


def one_critic(twin, k: int, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Critic k (0 or 1) of a TwinQ by hand: Linear layers with ReLU between them."""
    h = torch.cat([obs, actions], dim=-1)
    for i, (weight, bias) in enumerate(zip(twin.weights, twin.biases)):
        h = h @ weight[k] + bias[k, 0]
        if i < len(twin.weights) - 1:
            h = torch.relu(h)
    return h.squeeze(-1)


def random_batch(seed: int, rows: int = 6) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        c.OBS: torch.rand(rows, 3, generator=generator) * 2 - 1,
        c.ACTIONS: torch.rand(rows, 2, generator=generator) * 2 - 1,
        c.REWARDS: torch.randn(rows, generator=generator),
        c.NEW_OBS: torch.rand(rows, 3, generator=generator) * 2 - 1,
        c.TERMINATEDS: torch.tensor([False, True, False, False, True, False][:rows]),
        N_STEP_DISCOUNT: torch.tensor([0.99, 0.99, 0.9801, 0.99, 0.970299, 0.99][:rows]),
    }


def test_critic_loss_by_hand():
    module = small_module()
    with torch.no_grad():  # targets that differ from the critics, and from each other
        for p in module.target_twin_q.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = random_batch(0)

    torch.manual_seed(7)
    out = critic_loss(module, batch)
    loss = out.loss

    # The same next actions: the loss draws them from torch's global generator.
    torch.manual_seed(7)
    with torch.no_grad():
        next_inputs = module.forward_train({c.OBS: batch[c.NEW_OBS]})[c.ACTION_DIST_INPUTS]
        next_actions, next_logp = TanhGaussian(next_inputs).rsample_with_logp()
        next_target_q = torch.min(
            one_critic(module.target_twin_q, 0, batch[c.NEW_OBS], next_actions),
            one_critic(module.target_twin_q, 1, batch[c.NEW_OBS], next_actions),
        )
        soft_value = next_target_q - 0.5 * next_logp
        alive = (~batch[c.TERMINATEDS]).float()
        targets = batch[c.REWARDS] + batch[N_STEP_DISCOUNT] * alive * soft_value
        q1 = one_critic(module.twin_q, 0, batch[c.OBS], batch[c.ACTIONS])
        q2 = one_critic(module.twin_q, 1, batch[c.OBS], batch[c.ACTIONS])
        expected = 0.5 * ((q1 - targets).pow(2) + (q2 - targets).pow(2)).mean()
    torch.testing.assert_close(loss.detach(), expected)
    torch.testing.assert_close(out.td_errors, q1 - targets)
    # Terminated rows regress on the reward alone.
    torch.testing.assert_close(targets[batch[c.TERMINATEDS]], batch[c.REWARDS][[1, 4]])


def test_actor_and_alpha_losses_by_hand_and_their_gradients():
    module = small_module(initial_alpha=0.2)
    batch = random_batch(1)
    target_entropy = -2.0

    torch.manual_seed(3)
    actor_loss, alpha_loss, stats = actor_and_alpha_losses(module, batch, target_entropy)
    torch.manual_seed(3)
    inputs = module.forward_train({c.OBS: batch[c.OBS]})[c.ACTION_DIST_INPUTS]
    actions, logp = TanhGaussian(inputs).rsample_with_logp()
    q = torch.min(*module.q_values(batch[c.OBS], actions))

    torch.testing.assert_close(actor_loss, (0.2 * logp - q).mean())
    torch.testing.assert_close(alpha_loss, -(math.log(0.2) * (logp + target_entropy)).mean())
    assert stats[m.ALPHA_VALUE] == pytest.approx(0.2)
    torch.testing.assert_close(stats[m.ENTROPY], -logp.detach().mean())

    (actor_loss + alpha_loss).backward()
    # d alpha_loss / d log_alpha = -(logp + target_entropy).mean(): alpha grows when the
    # entropy (-logp) is below the target, shrinks when above.
    torch.testing.assert_close(module.log_alpha.grad, -(logp.detach() + target_entropy).mean())
    assert all(p.grad is not None for p in module.actor_parameters())
    # The actor's loss moves the actor only: the critics' weights get no gradient from it.
    assert all(p.grad is None for p in module.critic_parameters())


def test_the_two_stacked_critics_are_two_independent_networks():
    module = small_module()
    batch = random_batch(2)
    q = module.q_values(batch[c.OBS], batch[c.ACTIONS])
    assert q.shape == (2, 6)
    torch.testing.assert_close(q[0], one_critic(module.twin_q, 0, batch[c.OBS], batch[c.ACTIONS]))
    torch.testing.assert_close(q[1], one_critic(module.twin_q, 1, batch[c.OBS], batch[c.ACTIONS]))
    assert not torch.allclose(q[0], q[1])  # initialized apart
    # A gradient on Q1 alone reaches only Q1's half of every stacked weight.
    q[0].sum().backward()
    for weight in module.twin_q.weights:
        assert weight.grad[0].abs().sum() > 0 and weight.grad[1].abs().sum() == 0


def test_a_module_state_with_separate_critics_loads_into_the_stacked_ones():
    # tunerl 0.1.0 saved SAC's critics as q1/q2 (and target_q1/target_q2) Linear layers.
    old = small_module(seed=0)
    legacy = {k: v for k, v in old.get_state().items() if "twin_q" not in k}
    for stacked, (first, second) in {
        "twin_q": ("q1", "q2"),
        "target_twin_q": ("target_q1", "target_q2"),
    }.items():
        twin = getattr(old, stacked)
        names = [f"encoder.layers.{i}" for i in range(len(twin.weights) - 1)] + ["head"]
        for i, name in enumerate(names):
            for k, critic in enumerate((first, second)):
                legacy[f"{critic}.{name}.weight"] = twin.weights[i][k].detach().T.clone()
                legacy[f"{critic}.{name}.bias"] = twin.biases[i][k, 0].detach().clone()

    fresh = small_module(seed=1)
    fresh.set_state(legacy)

    batch = random_batch(3)
    torch.testing.assert_close(
        fresh.q_values(batch[c.OBS], batch[c.ACTIONS]), old.q_values(batch[c.OBS], batch[c.ACTIONS])
    )
    torch.testing.assert_close(
        fresh.target_min_q(batch[c.OBS], batch[c.ACTIONS]),
        old.target_min_q(batch[c.OBS], batch[c.ACTIONS]),
    )


# -------------------------------------------------------------------------- training
def test_sac_trains_on_pendulum_and_reports_its_stats(build):
    algo = build(tiny_sac_config())

    result = algo.train()
    result = algo.train()

    stats = result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]
    for key in (m.QF_LOSS, m.ACTOR_LOSS, m.ALPHA_LOSS, m.ALPHA_VALUE, m.ENTROPY):
        assert key in stats and np.isfinite(stats[key]), key
    assert "td_errors" not in stats
    module = algo.get_module()
    assert stats[m.ALPHA_VALUE] == pytest.approx(module.log_alpha.exp().item(), rel=1e-2)
    assert stats[m.ALPHA_VALUE] != 1.0  # the temperature has been tuned away from its start
    # Learning starts with the training step that brings the count to 50; from there on,
    # 8 replayed rows per sampled step: 16 training steps of 10 env steps.
    assert result[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == 16 * 10 * 8
    assert len(algo.replay.buffers[c.DEFAULT_MODULE_ID]) == 200


class ActionRecordingPendulum(gym.Wrapper):
    """Pendulum-v1 that keeps every action it is stepped with."""

    def __init__(self):
        super().__init__(gym.make("Pendulum-v1"))
        self.actions: list[np.ndarray] = []

    def step(self, action):
        self.actions.append(np.array(action, dtype=np.float32))
        return super().step(action)


def test_actions_stay_within_the_env_bounds(build):
    algo = build(
        tiny_sac_config(env=ActionRecordingPendulum, num_steps_sampled_before_learning_starts=0)
    )
    algo.train()

    (env,) = algo.env_runner_group.local_env_runner.env.envs
    env_actions = np.concatenate(env.actions)
    stored = algo.replay.buffers[c.DEFAULT_MODULE_ID].storage[c.ACTIONS][
        : len(algo.replay.buffers[c.DEFAULT_MODULE_ID]), 0
    ]
    low, high = env.action_space.low[0], env.action_space.high[0]
    assert (low, high) == (-2.0, 2.0)
    assert len(env_actions) == len(stored) == 100
    assert ((env_actions >= low) & (env_actions <= high)).all()
    # The policy acts in [-1, 1] and the runner scales to the env's bounds: the stored action
    # is the policy's, the env's is twice it, and the exploration uses the full range.
    assert (np.abs(stored) <= 1.0).all()
    np.testing.assert_allclose(env_actions, 2.0 * stored, atol=1e-6)
    assert np.abs(env_actions).max() > 1.0


def test_learning_from_the_first_step_waits_for_the_first_n_step_transition(build):
    # One-step fragments with 3-step returns: the first two sampled steps are still waiting in
    # the n-step collector, so the buffer is empty when learning is first due.
    config = tiny_sac_config(
        num_steps_sampled_before_learning_starts=0, n_step=3, training_intensity=32.0
    )
    config.env_runners(rollout_fragment_length=1)
    algo = build(config)
    result = algo.train()

    assert (
        len(algo.replay.buffers[c.DEFAULT_MODULE_ID])
        + len(algo.replay.collectors[c.DEFAULT_MODULE_ID])
        == 100
    )
    assert result[m.NUM_ENV_STEPS_TRAINED_LIFETIME] > 0


def test_target_critics_move_by_tau_after_an_update(build):
    tau = 0.1
    algo = build(tiny_sac_config(tau=tau))
    algo.train()
    module = algo.get_module()
    online = list(module.twin_q.parameters())
    target = list(module.target_twin_q.parameters())
    old_online = [p.detach().clone() for p in online]
    old_target = [p.detach().clone() for p in target]
    assert not all(torch.equal(a, b) for a, b in zip(old_online, old_target))

    replay = algo.replay.buffers[c.DEFAULT_MODULE_ID].sample(32)
    replay.pop("batch_indexes")
    algo.learner.update(replay)

    assert not all(torch.equal(p, old) for p, old in zip(online, old_online))
    for new_target, old, live in zip(target, old_target, online, strict=True):
        torch.testing.assert_close(new_target, old + tau * (live.detach() - old))


def test_mean_std_filter_statistics_follow_the_sampled_observations(build):
    algo = build(tiny_sac_config().env_runners(observation_filter="MeanStdFilter"))
    result = algo.train()
    assert int(algo.get_module().obs_normalizer.count) == result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]


def test_reset_config_starts_a_fresh_replay_buffer(build):
    algo = build(tiny_sac_config())
    algo.train()
    new_config = tiny_sac_config(replay_buffer_config={"type": "ReplayBuffer", "capacity": 500})

    assert algo.reset_config(new_config.to_dict()) is True

    assert algo.replay.buffers[c.DEFAULT_MODULE_ID].capacity == 500
    assert len(algo.replay.buffers[c.DEFAULT_MODULE_ID]) == 0


def test_sac_refuses_a_multi_discrete_action_space():
    with pytest.raises(UnsupportedSpaceError, match="float Box or a Discrete action space"):
        SACModule(
            gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
            gym.spaces.MultiDiscrete([2, 3]),
            model_config={"fcnet_hiddens": [8], "fcnet_activation": "relu"},
        )


# ------------------------------------------------------------------ discrete actions
def small_discrete_module(initial_alpha: float = 0.5) -> SACModule:
    torch.manual_seed(0)
    return SACModule(
        gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
        gym.spaces.Discrete(4),
        model_config={
            "fcnet_hiddens": [8],
            "fcnet_activation": "relu",
            "initial_alpha": initial_alpha,
        },
    )


def all_actions_by_hand(twin, k: int, obs: torch.Tensor) -> torch.Tensor:
    """Critic k's Q(s, .) of a discrete TwinQ by hand, shape (batch, num_actions)."""
    h = obs
    for i, (weight, bias) in enumerate(zip(twin.weights, twin.biases)):
        h = h @ weight[k] + bias[k, 0]
        if i < len(twin.weights) - 1:
            h = torch.relu(h)
    return h


def discrete_batch() -> dict[str, torch.Tensor]:
    batch = random_batch(3)
    batch[c.ACTIONS] = torch.tensor([0, 3, 1, 2, 2, 0])
    return batch


def test_discrete_critic_loss_takes_the_exact_expectation_over_next_actions():
    module = small_discrete_module()
    with torch.no_grad():
        for p in module.target_twin_q.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = discrete_batch()

    out = critic_loss(module, batch)
    loss = out.loss

    with torch.no_grad():
        logits = module.forward_train({c.OBS: batch[c.NEW_OBS]})[c.ACTION_DIST_INPUTS]
        probs = torch.softmax(logits, -1)
        target_q = torch.min(
            all_actions_by_hand(module.target_twin_q, 0, batch[c.NEW_OBS]),
            all_actions_by_hand(module.target_twin_q, 1, batch[c.NEW_OBS]),
        )
        soft_value = (probs * (target_q - 0.5 * probs.log())).sum(-1)
        alive = (~batch[c.TERMINATEDS]).float()
        targets = batch[c.REWARDS] + batch[N_STEP_DISCOUNT] * alive * soft_value
        rows = torch.arange(6)
        q1 = all_actions_by_hand(module.twin_q, 0, batch[c.OBS])[rows, batch[c.ACTIONS]]
        q2 = all_actions_by_hand(module.twin_q, 1, batch[c.OBS])[rows, batch[c.ACTIONS]]
        expected = 0.5 * ((q1 - targets).pow(2) + (q2 - targets).pow(2)).mean()
    torch.testing.assert_close(loss.detach(), expected)
    torch.testing.assert_close(out.td_errors, q1 - targets)


def test_discrete_actor_and_alpha_losses_by_hand_and_their_gradients():
    module = small_discrete_module(initial_alpha=0.2)
    batch = discrete_batch()
    target_entropy = 0.5 * math.log(4)

    actor_loss, alpha_loss, stats = actor_and_alpha_losses(module, batch, target_entropy)

    logits = module.forward_train({c.OBS: batch[c.OBS]})[c.ACTION_DIST_INPUTS]
    probs = torch.softmax(logits, -1)
    q = torch.min(
        all_actions_by_hand(module.twin_q, 0, batch[c.OBS]),
        all_actions_by_hand(module.twin_q, 1, batch[c.OBS]),
    )
    entropy = -(probs * probs.log()).sum(-1)
    torch.testing.assert_close(actor_loss, (probs * (0.2 * probs.log() - q)).sum(-1).mean())
    torch.testing.assert_close(
        alpha_loss, (math.log(0.2) * (entropy - target_entropy)).mean(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(stats[m.ENTROPY], entropy.detach().mean())

    (actor_loss + alpha_loss).backward()
    # alpha grows while the entropy is below the target
    torch.testing.assert_close(module.log_alpha.grad, (entropy - target_entropy).mean().detach())
    assert all(p.grad is not None for p in module.actor_parameters())
    assert all(p.grad is None for p in module.critic_parameters())


def test_discrete_sac_trains_on_cartpole_within_the_action_space(build):
    algo = build(tiny_sac_config(env="CartPole-v1"))
    result = algo.train()

    stored = algo.replay.buffers[c.DEFAULT_MODULE_ID].storage[c.ACTIONS][
        : len(algo.replay.buffers[c.DEFAULT_MODULE_ID])
    ]
    assert set(np.unique(stored)) <= {0, 1} and len(np.unique(stored)) == 2
    stats = result["learners"]["default_policy"]
    assert all(math.isfinite(value) for value in stats.values())
    assert algo.learner.target_entropy(c.DEFAULT_MODULE_ID) == pytest.approx(0.5 * math.log(2))


# --------------------------------------------------------------------- checkpoints
def module_state(algo: SAC) -> dict[str, torch.Tensor]:
    return algo.get_module().get_state()


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def learner_stats(algo: SAC, iterations: int = 2) -> list[dict[str, float]]:
    return [algo.train()[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID] for _ in range(iterations)]


@pytest.fixture
def trained_sac(build):
    algo = build(tiny_sac_config(store_buffer_in_checkpoints=True))
    algo.train()
    return algo


@pytest.mark.parametrize("store_buffer", [True, False])
def test_checkpoint_restores_module_optimizers_and_buffer(build, tmp_path, store_buffer):
    algo = build(tiny_sac_config(store_buffer_in_checkpoints=store_buffer))
    algo.train()
    path = Path(algo.save_to_path(tmp_path / "checkpoint"))
    assert (path / buffer_file(c.DEFAULT_MODULE_ID)).is_file() == store_buffer

    restored = SAC.from_checkpoint(path)
    try:
        assert_same_state(module_state(restored), module_state(algo))
        for name in ("actor", "critic", "alpha"):
            mine, theirs = (
                a.learner.get_optimizer(c.DEFAULT_MODULE_ID, name).state_dict()
                for a in (restored, algo)
            )
            assert mine["step"] > 0 and mine["step"] == theirs["step"]
            for x, y in zip(
                mine["exp_avg"] + mine["exp_avg_sq"], theirs["exp_avg"] + theirs["exp_avg_sq"]
            ):
                assert torch.equal(x, y)
        assert len(restored.replay.buffers[c.DEFAULT_MODULE_ID]) == (
            len(algo.replay.buffers[c.DEFAULT_MODULE_ID]) if store_buffer else 0
        )
        if store_buffer:
            for key, column in algo.replay.buffers[c.DEFAULT_MODULE_ID].storage.items():
                np.testing.assert_array_equal(
                    restored.replay.buffers[c.DEFAULT_MODULE_ID].storage[key], column
                )
    finally:
        restored.stop()


def test_restores_one_after_the_other_continue_identically(trained_sac, tmp_path):
    path = Path(trained_sac.save_to_path(tmp_path / "checkpoint"))
    runs = []
    for _ in range(2):
        restored = SAC.from_checkpoint(path)
        try:
            runs.append((learner_stats(restored), module_state(restored)))
        finally:
            restored.stop()
    (first_stats, first_state), (second_stats, second_state) = runs
    assert first_stats == second_stats
    assert_same_state(first_state, second_state)


def test_two_algorithms_restored_from_one_checkpoint_continue_identically(trained_sac, tmp_path):
    path = Path(trained_sac.save_to_path(tmp_path / "checkpoint"))
    first, second = SAC.from_checkpoint(path), SAC.from_checkpoint(path)
    try:
        assert learner_stats(first) == learner_stats(second)
        assert_same_state(module_state(first), module_state(second))
    finally:
        first.stop()
        second.stop()


def test_a_checkpoint_with_separate_critics_continues_with_the_stacked_ones(build, tmp_path):
    algo = build(tiny_sac_config())
    algo.train()
    path = Path(algo.save_to_path(tmp_path / "ckpt"))
    # Rewrite the checkpoint as tunerl 0.1.0 wrote it: separate critics and their moments.
    module_file = path / MODULE_DIR / c.DEFAULT_MODULE_ID / MODULE_STATE_FILE
    optimizer_file = path / LEARNER_DIR / LEARNER_TENSORS_FILE
    module_state = checkpoint_io.load_tensors(module_file)
    optimizer_state = checkpoint_io.load_tensors(optimizer_file)
    module = algo.get_module()
    num_layers = len(module.twin_q.weights)
    names = [f"encoder.layers.{i}" for i in range(num_layers - 1)] + ["head"]
    for stacked, critics in {
        "twin_q": ("q1", "q2"),
        "target_twin_q": ("target_q1", "target_q2"),
    }.items():
        for i, name in enumerate(names):
            weight = module_state.pop(f"{stacked}.weights.{i}")
            bias = module_state.pop(f"{stacked}.biases.{i}")
            for k, critic in enumerate(critics):
                module_state[f"{critic}.{name}.weight"] = weight[k].T.contiguous()
                module_state[f"{critic}.{name}.bias"] = bias[k, 0].clone()
    # tunerl 0.1's learner file: {"optimizer": {"actor": ..., "critic": ..., "alpha": ...}}.
    optimizer_state = {"optimizer": optimizer_state["optimizers"][c.DEFAULT_MODULE_ID]}
    critic_moments = optimizer_state["optimizer"]["critic"]
    for key in ("exp_avg", "exp_avg_sq"):
        weights, biases = critic_moments[key][:num_layers], critic_moments[key][num_layers:]
        critic_moments[key] = [
            t
            for k in (0, 1)
            for w, b in zip(weights, biases)
            for t in (w[k].T.contiguous(), b[k, 0])
        ]
    checkpoint_io.save_tensors(module_file, module_state)
    checkpoint_io.save_tensors(optimizer_file, optimizer_state)
    checkpoint_io.write_manifest(path)

    restored = build(tiny_sac_config())
    restored.restore_from_path(path)

    expected = algo.get_module().get_state()
    actual = restored.get_module().get_state()
    assert set(actual) == set(expected)
    assert all(torch.equal(actual[k], expected[k]) for k in expected)
    for key in ("exp_avg", "exp_avg_sq"):
        for a, b in zip(
            getattr(restored.learner.get_optimizer(c.DEFAULT_MODULE_ID, "critic"), key),
            getattr(algo.learner.get_optimizer(c.DEFAULT_MODULE_ID, "critic"), key),
            strict=True,
        ):
            assert torch.equal(a, b)
    assert restored.train()[m.NUM_ENV_STEPS_TRAINED_LIFETIME] > 0
