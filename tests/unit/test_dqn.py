"""DQN: tiny runs on CartPole, the epsilon schedule, hard and soft target updates, the loss
on hand-made batches (double Q, termination, weights), epsilon-greedy acting, refusal of
continuous actions, and checkpoints that carry the replay buffer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from tunerl import DQN, DQNConfig
from tunerl.algorithms.dqn import DQNModule, dqn_loss
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.off_policy import buffer_file, updates_due
from tunerl.core.replay_buffers import (
    BATCH_INDEXES,
    N_STEP_DISCOUNT,
    WEIGHTS,
    PrioritizedReplayBuffer,
    ReplayBuffer,
)
from tunerl.core.rl_module import UnsupportedSpaceError
from tunerl.core.sample_batch import SampleBatch

EPSILON_SCHEDULE = [[0, 1.0], [300, 0.1]]
STEPS_PER_TRAINING_STEP = 2 * 8  # num_envs_per_env_runner * rollout_fragment_length


def tiny_dqn_config(env: Any = "CartPole-v1", seed: int = 0, **training: Any) -> DQNConfig:
    """Iterations of ~200 env steps (13 training steps of 16), about 50 updates of 32, hard
    target updates."""
    settings = {
        "num_steps_sampled_before_learning_starts": 32,
        "train_batch_size_per_learner": 32,
        "training_intensity": 8.0,
        "epsilon": EPSILON_SCHEDULE,
        # Pinned rather than taken from the defaults, which are tuned for CartPole separately.
        "tau": 1.0,
        "target_network_update_freq": 500,
        "n_step": 3,
        "double_q": True,
        "replay_buffer_config": {
            "type": "PrioritizedReplayBuffer",
            "capacity": 1000,
            "alpha": 0.6,
            "beta": 0.4,
        },
        **training,
    }
    return (
        DQNConfig()
        .environment(env)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2, rollout_fragment_length=8)
        .training(**settings)
        .reporting(min_sample_timesteps_per_iteration=200)
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .debugging(seed=seed)
    )


def parameters(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def all_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def runner_module(algo: DQN) -> DQNModule:
    return algo.env_runner_group.local_env_runner.policy


# ------------------------------------------------------------------------ training
def test_dqn_trains_on_cartpole_and_reports_its_stats(build):
    algo = build(tiny_dqn_config())

    result = algo.train()

    stats = result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]
    for key in (m.QF_LOSS, m.QF_MEAN, m.TD_ERROR_MEAN, m.CURR_EPSILON):
        assert key in stats and np.isfinite(stats[key]), key
    assert stats[m.QF_LOSS] > 0 and stats[m.TD_ERROR_MEAN] > 0
    sampled = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    assert sampled >= 200
    # Updates of 32 rows, training_intensity 8 per sampled step once learning started.
    trained = result[m.NUM_ENV_STEPS_TRAINED_LIFETIME]
    assert trained > 0 and trained % 32 == 0
    assert abs(trained - (sampled - 32) * 8) <= 3 * 32 * 8
    # Every sampled step is stored or waits for the steps its n-step return still needs
    # (at most n_step - 1 per sub-env).
    waiting = len(algo.replay.collectors[c.DEFAULT_MODULE_ID])
    assert len(algo.replay.buffers[c.DEFAULT_MODULE_ID]) + waiting == sampled
    assert 0 < waiting <= (algo.config.n_step - 1) * algo.config.num_envs_per_env_runner


def test_no_updates_before_learning_starts(build):
    algo = build(tiny_dqn_config(num_steps_sampled_before_learning_starts=10_000))
    initial = parameters(algo.get_module().q_net)

    result = algo.train()

    stats = result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]
    assert set(stats) == {m.CURR_EPSILON}
    assert result[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == 0
    assert all_equal(parameters(algo.get_module().q_net), initial)
    sampled = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    assert (
        len(algo.replay.buffers[c.DEFAULT_MODULE_ID])
        + len(algo.replay.collectors[c.DEFAULT_MODULE_ID])
        == sampled
    )


def test_epsilon_follows_its_schedule_in_learner_and_runners(build):
    algo = build(tiny_dqn_config())
    assert float(algo.get_module().epsilon) == 1.0
    steps, values = zip(*EPSILON_SCHEDULE, strict=True)
    seen = []
    for _ in range(2):
        result = algo.train()
        sampled = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        expected = float(np.interp(sampled, steps, values))
        epsilon = result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID][m.CURR_EPSILON]
        assert epsilon == pytest.approx(expected, abs=1e-6)
        assert float(algo.get_module().epsilon) == pytest.approx(expected, abs=1e-6)
        assert float(runner_module(algo).epsilon) == pytest.approx(expected, abs=1e-6)
        seen.append(epsilon)
    assert 0.1 < seen[0] < 1.0  # mid-schedule after ~200 steps
    assert seen[1] == pytest.approx(0.1)  # held at the last value past step 300


def test_target_network_equals_online_right_after_a_hard_update(build):
    # A hard update at the end of every training step, after its SGD updates.
    algo = build(tiny_dqn_config(target_network_update_freq=STEPS_PER_TRAINING_STEP))
    module = algo.get_module()
    initial = parameters(module.q_net)

    algo.train()

    assert not all_equal(parameters(module.q_net), initial)
    assert all_equal(parameters(module.target_q_net), parameters(module.q_net))


def test_target_network_stays_until_its_update_is_due(build):
    algo = build(tiny_dqn_config(target_network_update_freq=1_000_000))
    module = algo.get_module()
    initial = parameters(module.q_net)
    assert all_equal(parameters(module.target_q_net), initial)

    algo.train()

    assert not all_equal(parameters(module.q_net), initial)
    assert all_equal(parameters(module.target_q_net), initial)


def test_update_target_hard_copy_and_polyak_step():
    torch.manual_seed(0)
    module = DQNModule(
        gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
        gym.spaces.Discrete(2),
        model_config={"fcnet_hiddens": [8], "fcnet_activation": "relu"},
    )
    with torch.no_grad():
        for p in module.q_net.parameters():
            p.add_(torch.randn_like(p))
    online, old_target = parameters(module.q_net), parameters(module.target_q_net)
    assert not all_equal(online, old_target)

    module.update_target(0.25)
    for new, old, live in zip(parameters(module.target_q_net), old_target, online, strict=True):
        torch.testing.assert_close(new, old + 0.25 * (live - old))

    module.update_target(1.0)
    assert all_equal(parameters(module.target_q_net), online)
    assert not any(p.requires_grad for p in module.target_q_net.parameters())


def test_updates_due_carries_the_fraction_over():
    # 10 sampled steps * 8 replayed rows per step / 32 rows per update = 2.5 updates.
    assert updates_due(0.0, 10, 8.0, 32) == (2, 0.5)
    assert updates_due(0.5, 10, 8.0, 32) == (3, 0.0)
    assert updates_due(0.0, 3, 1.0, 32) == (0, pytest.approx(3 / 32))


def test_with_epsilon_zero_every_action_is_greedy(build):
    # No updates, so the Q-network that acted is the one checked against.
    algo = build(tiny_dqn_config(epsilon=0.0, num_steps_sampled_before_learning_starts=10_000))
    algo.train()

    size = len(algo.replay.buffers[c.DEFAULT_MODULE_ID])
    obs = torch.from_numpy(algo.replay.buffers[c.DEFAULT_MODULE_ID].storage[c.OBS][:size])
    actions = algo.replay.buffers[c.DEFAULT_MODULE_ID].storage[c.ACTIONS][:size]
    greedy = algo.get_module().forward_inference({c.OBS: obs})["q_values"].argmax(-1).numpy()
    assert size >= 200
    np.testing.assert_array_equal(actions, greedy)


def test_reset_config_starts_a_fresh_replay_buffer(build):
    algo = build(tiny_dqn_config())
    algo.train()
    new_config = tiny_dqn_config(replay_buffer_config={"type": "ReplayBuffer", "capacity": 500})

    assert algo.reset_config(new_config.to_dict()) is True

    assert type(algo.replay.buffers[c.DEFAULT_MODULE_ID]) is ReplayBuffer
    assert algo.replay.buffers[c.DEFAULT_MODULE_ID].capacity == 500
    assert len(algo.replay.buffers[c.DEFAULT_MODULE_ID]) == 0
    assert algo.replay.update_credit == 0.0 and algo._steps_since_target_update == 0


def test_mean_std_filter_statistics_follow_the_sampled_observations(build):
    algo = build(tiny_dqn_config().env_runners(observation_filter="MeanStdFilter"))
    result = algo.train()
    normalizer = algo.get_module().obs_normalizer
    assert int(normalizer.count) == result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    assert torch.equal(runner_module(algo).obs_normalizer.mean, normalizer.mean)


def test_dqn_refuses_a_continuous_action_space():
    with pytest.raises(UnsupportedSpaceError, match="Discrete action space"):
        tiny_dqn_config(env="Pendulum-v1").build_algo()


# -------------------------------------------------------------------------- the loss
def linear_q_module() -> DQNModule:
    """Q(s) = W s with no hidden layer and no dueling head, so Q-values are set by hand."""
    module = DQNModule(
        gym.spaces.Box(-10.0, 10.0, (2,), np.float32),
        gym.spaces.Discrete(3),
        model_config={"fcnet_hiddens": [], "dueling": False},
    )
    with torch.no_grad():
        module.q_net.advantage.bias.zero_()
        module.target_q_net.advantage.bias.zero_()
        # Online: Q(s) = [s0 + s1, 2 s0, -s1]; target: Q(s) = [5 s0, -s0 + 3 s1, s1].
        module.q_net.advantage.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, -1.0]]))
        module.target_q_net.advantage.weight.copy_(
            torch.tensor([[5.0, 0.0], [-1.0, 3.0], [0.0, 1.0]])
        )
    return module


def hand_made_batch() -> dict[str, torch.Tensor]:
    return {
        c.OBS: torch.tensor([[1.0, 2.0], [0.5, -1.0], [-1.0, 1.0]]),
        c.ACTIONS: torch.tensor([0, 1, 2]),
        c.REWARDS: torch.tensor([1.0, -0.5, 2.0]),
        c.NEW_OBS: torch.tensor([[1.0, 0.0], [1.0, 1.5], [0.0, 2.0]]),
        c.TERMINATEDS: torch.tensor([False, False, True]),
        N_STEP_DISCOUNT: torch.tensor([0.9, 0.81, 0.9]),
    }


# Q-values of the batch above, worked out from the weights:
# q_taken: row 0 online(1, 2)[0] = 3; row 1 online(0.5, -1)[1] = 1; row 2 online(-1, 1)[2] = -1.
Q_TAKEN = np.array([3.0, 1.0, -1.0])
# new_obs (1, 0): online [1, 2, 0] picks action 1, target [5, -1, 0] rates it -1 (its own
# argmax would be action 0, worth 5). new_obs (1, 1.5): online [2.5, 2, -1.5] picks action 0,
# target [5, 3.5, 1.5] rates it 5 (its max too). Row 2 is terminated: no bootstrap.
DOUBLE_Q_TARGETS = np.array([1.0 + 0.9 * -1.0, -0.5 + 0.81 * 5.0, 2.0])
MAX_TARGET_TARGETS = np.array([1.0 + 0.9 * 5.0, -0.5 + 0.81 * 5.0, 2.0])


@pytest.mark.parametrize(
    "double_q, targets", [(True, DOUBLE_Q_TARGETS), (False, MAX_TARGET_TARGETS)]
)
def test_dqn_loss_targets_by_hand(double_q, targets):
    module = linear_q_module()
    config = DQNConfig().training(double_q=double_q, td_error_loss_fn="mse")

    out = dqn_loss(module, hand_made_batch(), config)
    loss, stats, td_errors = out.loss, out.stats, out.td_errors

    np.testing.assert_allclose(td_errors.numpy(), Q_TAKEN - targets, rtol=1e-6, atol=1e-6)
    expected_loss = np.mean((Q_TAKEN - targets) ** 2)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-6)
    assert float(stats[m.QF_LOSS]) == pytest.approx(expected_loss, rel=1e-6)
    assert float(stats[m.QF_MEAN]) == pytest.approx(Q_TAKEN.mean(), rel=1e-6)
    assert float(stats[m.TD_ERROR_MEAN]) == pytest.approx(np.abs(Q_TAKEN - targets).mean())


def test_dqn_loss_huber_with_importance_weights_and_gradient_only_to_the_online_net():
    module = linear_q_module()
    config = DQNConfig().training(double_q=True, td_error_loss_fn="huber")
    batch = hand_made_batch()
    weights = np.array([0.5, 1.0, 0.25])
    batch[WEIGHTS] = torch.tensor(weights, dtype=torch.float32)

    loss = dqn_loss(module, batch, config).loss
    loss.backward()

    error = np.abs(Q_TAKEN - DOUBLE_Q_TARGETS)
    huber = np.where(error <= 1.0, 0.5 * error**2, error - 0.5)
    assert loss.item() == pytest.approx(np.mean(weights * huber), rel=1e-6)
    assert module.q_net.advantage.weight.grad is not None
    assert all(p.grad is None for p in module.target_q_net.parameters())


def test_dueling_head_combines_value_and_mean_centred_advantages():
    torch.manual_seed(1)
    module = DQNModule(
        gym.spaces.Box(-1.0, 1.0, (4,), np.float32),
        gym.spaces.Discrete(3),
        model_config={"fcnet_hiddens": [8], "fcnet_activation": "relu", "dueling": True},
    )
    obs = torch.randn(5, 4)
    net = module.q_net
    with torch.no_grad():
        features = net.encoder(obs)
        advantages = net.advantage(features)
        expected = net.value(features) + advantages - advantages.mean(-1, keepdim=True)
        q = module.forward_inference({c.OBS: obs})["q_values"]
    torch.testing.assert_close(q, expected)


# --------------------------------------------------------------------- exploration
def test_exploration_is_epsilon_greedy():
    module = linear_q_module()
    obs = torch.tensor([[1.0, 0.0], [0.0, -2.0]])  # greedy actions 1 and 2
    module.epsilon.fill_(0.3)

    probs = module.forward_exploration({c.OBS: obs})[c.ACTION_DIST_INPUTS].exp()

    expected = torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    torch.testing.assert_close(probs, expected)
    module.epsilon.fill_(0.0)
    greedy = module.forward_exploration({c.OBS: obs})[c.ACTION_DIST_INPUTS].exp()
    torch.testing.assert_close(greedy, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


# --------------------------------------------------------------------- checkpoints
def buffer_contents(buffer: PrioritizedReplayBuffer) -> dict[str, np.ndarray]:
    size = len(buffer)
    contents = {key: value[:size].copy() for key, value in buffer.storage.items()}
    contents["priorities"] = buffer.tree.get(np.arange(size)).copy()
    return contents


def assert_same_contents(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def learner_stats(algo: DQN, iterations: int = 2) -> list[dict[str, float]]:
    return [algo.train()[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID] for _ in range(iterations)]


def test_checkpoint_with_the_buffer_restores_it_and_two_restores_continue_identically(
    build, tmp_path
):
    algo = build(tiny_dqn_config(store_buffer_in_checkpoints=True))
    algo.train()
    expected = buffer_contents(algo.replay.buffers[c.DEFAULT_MODULE_ID])
    assert len(algo.replay.buffers[c.DEFAULT_MODULE_ID]) > 0
    path = Path(algo.save_to_path(tmp_path / "checkpoint"))
    assert (path / buffer_file(c.DEFAULT_MODULE_ID)).is_file()

    first, second = DQN.from_checkpoint(path), DQN.from_checkpoint(path)
    try:
        for restored in (first, second):
            assert len(restored.replay.buffers[c.DEFAULT_MODULE_ID]) == len(
                algo.replay.buffers[c.DEFAULT_MODULE_ID]
            )
            assert (
                restored.replay.buffers[c.DEFAULT_MODULE_ID].next_index
                == algo.replay.buffers[c.DEFAULT_MODULE_ID].next_index
            )
            assert (
                restored.replay.buffers[c.DEFAULT_MODULE_ID].max_priority
                == algo.replay.buffers[c.DEFAULT_MODULE_ID].max_priority
            )
            assert_same_contents(
                buffer_contents(restored.replay.buffers[c.DEFAULT_MODULE_ID]), expected
            )
            assert float(restored.get_module().epsilon) == float(algo.get_module().epsilon)
        assert learner_stats(first) == learner_stats(second)
        for a, b in zip(first.get_module().parameters(), second.get_module().parameters()):
            assert torch.equal(a, b)
    finally:
        first.stop()
        second.stop()


def test_checkpoint_without_the_buffer_restores_an_empty_one(build, tmp_path):
    algo = build(tiny_dqn_config())
    algo.train()
    path = Path(algo.save_to_path(tmp_path / "checkpoint"))
    assert not (path / buffer_file(c.DEFAULT_MODULE_ID)).exists()

    restored = DQN.from_checkpoint(path)
    try:
        assert len(restored.replay.buffers[c.DEFAULT_MODULE_ID]) == 0
        assert restored.iteration == algo.iteration
        for a, b in zip(restored.get_module().parameters(), algo.get_module().parameters()):
            assert torch.equal(a, b)
    finally:
        restored.stop()


def test_loss_accepts_a_sample_from_the_buffer(build):
    """The learner's update takes a prioritized sample as it comes (weights included) and
    reports the TD errors the buffer's priorities are updated with."""
    algo = build(tiny_dqn_config())
    algo.train()
    replay = algo.replay.buffers[c.DEFAULT_MODULE_ID].sample(32)
    assert isinstance(replay, SampleBatch) and WEIGHTS in replay
    replay.pop(BATCH_INDEXES)

    stats = algo.learner.update(replay)[c.DEFAULT_MODULE_ID]

    assert np.isfinite(stats[m.QF_LOSS])
    assert stats[m.TD_ERRORS].shape == (32,)
