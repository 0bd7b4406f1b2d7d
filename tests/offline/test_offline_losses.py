"""Each offline loss against its formula computed by hand (numpy) from the module's own
outputs on a small batch."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from tunerl.algorithms.bc import bc_loss
from tunerl.algorithms.cql import CQLConfig, cql_penalty, discrete_cql_loss
from tunerl.algorithms.iql import IQLConfig, IQLModule, iql_losses
from tunerl.algorithms.marwil import marwil_loss
from tunerl.core import columns as c
from tunerl.core.distributions import TanhGaussian
from tunerl.core.replay_buffers import N_STEP_DISCOUNT
from tunerl.core.rl_module import DefaultRLModule, RLModuleSpec
from tunerl.core.rl_module.q_network import Q_VALUES, DQNModule
from tunerl.core.rl_module.soft_actor_critic import SACModule
from tunerl.offline.offline_data import RETURNS

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
DISCRETE = gym.spaces.Discrete(2)
BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
MODEL = {"fcnet_hiddens": [8], "fcnet_activation": "tanh", "vf_share_layers": False}


def module(cls, action_space, **model):
    torch.manual_seed(0)
    spec = RLModuleSpec(cls, OBS, action_space, {**MODEL, "free_log_std": False, **model})
    return spec.build()


def batch(action_space, rows: int = 6) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(1)
    if isinstance(action_space, gym.spaces.Discrete):
        actions = torch.as_tensor(rng.integers(0, 2, rows))
    else:
        actions = torch.as_tensor(rng.uniform(-0.9, 0.9, (rows, 2)), dtype=torch.float32)
    return {
        c.OBS: torch.as_tensor(rng.normal(size=(rows, 3)), dtype=torch.float32),
        c.NEW_OBS: torch.as_tensor(rng.normal(size=(rows, 3)), dtype=torch.float32),
        c.ACTIONS: actions,
        c.REWARDS: torch.as_tensor(rng.normal(size=rows), dtype=torch.float32),
        c.TERMINATEDS: torch.as_tensor([False, True] * (rows // 2)),
        RETURNS: torch.as_tensor(rng.normal(size=rows) * 5, dtype=torch.float32),
        N_STEP_DISCOUNT: torch.full((rows,), 0.9),
    }


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def test_bc_loss_is_minus_the_mean_log_likelihood():
    net, data = module(DefaultRLModule, DISCRETE), batch(DISCRETE)
    out = bc_loss(net, data)
    logits = net.forward_train(data)[c.ACTION_DIST_INPUTS].detach().numpy()
    logp = log_softmax(logits)[np.arange(6), data[c.ACTIONS].numpy()]
    assert float(out.loss.detach()) == pytest.approx(-logp.mean(), rel=1e-5)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_marwil_loss_weights_the_log_likelihood_by_exponentiated_advantages(beta):
    net, data = module(DefaultRLModule, DISCRETE), batch(DISCRETE)
    out, norm = marwil_loss(net, data, beta, 0.5, sqd_adv_norm=4.0, sqd_adv_norm_update_rate=0.1)
    forward = net.forward_train(data)
    logits = forward[c.ACTION_DIST_INPUTS].detach().numpy()
    values = forward[c.VF_PREDS].detach().numpy()
    logp = log_softmax(logits)[np.arange(6), data[c.ACTIONS].numpy()]
    advantages = data[RETURNS].numpy() - values
    expected_norm = 4.0 + 0.1 * ((advantages**2).mean() - 4.0)
    weights = np.exp(beta * advantages / (1e-8 + math.sqrt(expected_norm)))
    expected = -(weights * logp).mean() + 0.5 * 0.5 * (advantages**2).mean()
    assert norm == pytest.approx(expected_norm, rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_discrete_cql_adds_logsumexp_minus_the_data_q_to_the_td_loss():
    net, data = module(DQNModule, DISCRETE, dueling=False), batch(DISCRETE)
    out = discrete_cql_loss(net, data, min_q_weight=2.0)
    q = net.forward_train({c.OBS: data[c.OBS]})[Q_VALUES].detach().numpy()
    next_online = net.forward_train({c.OBS: data[c.NEW_OBS]})[Q_VALUES].detach().numpy()
    next_target = net.target_q_values(data[c.NEW_OBS]).numpy()
    actions = data[c.ACTIONS].numpy()
    q_data = q[np.arange(6), actions]
    next_q = next_target[np.arange(6), next_online.argmax(-1)]
    targets = data[c.REWARDS].numpy() + 0.9 * (1 - data[c.TERMINATEDS].numpy()) * next_q
    error = np.abs(q_data - targets)
    huber = np.where(error < 1, 0.5 * error**2, error - 0.5).mean()
    penalty = (np.log(np.exp(q).sum(-1)) - q_data).mean()
    assert float(out.loss.detach()) == pytest.approx(huber + 2.0 * penalty, rel=1e-5)


def test_cql_penalty_is_the_tempered_logsumexp_over_sampled_actions_minus_the_data_q():
    net, data = module(SACModule, BOX), batch(BOX)
    num_actions, temperature = 3, 2.0
    penalty = cql_penalty(net, data, num_actions, temperature, torch.Generator().manual_seed(5))
    # The same draws by hand: uniform actions, then the policy's at s and at s'.
    generator = torch.Generator().manual_seed(5)
    uniform = torch.rand(6 * num_actions, 2, generator=generator) * 2 - 1
    parts = [(uniform, np.full(6 * num_actions, 2 * math.log(0.5)))]
    with torch.no_grad():
        for states in (data[c.OBS], data[c.NEW_OBS]):
            inputs = net.forward_train({c.OBS: states.repeat_interleave(num_actions, 0)})
            actions, logp = TanhGaussian(inputs[c.ACTION_DIST_INPUTS]).rsample_with_logp(generator)
            parts.append((actions, logp.numpy()))
        repeated = data[c.OBS].repeat_interleave(num_actions, 0)
        q = [net.q_values(repeated, a).numpy() - logp for a, logp in parts]
        q_data = net.q_values(data[c.OBS], data[c.ACTIONS]).numpy()
    q_all = np.concatenate([x.reshape(2, 6, num_actions) for x in q], axis=-1)
    expected = temperature * np.log(np.exp(q_all / temperature).sum(-1)).mean(-1) - q_data.mean(-1)
    np.testing.assert_allclose(penalty.detach().numpy(), expected, rtol=1e-5)


def test_iql_losses_are_expectile_td_and_advantage_weighted_regression():
    net, data = module(IQLModule, BOX), batch(BOX)
    config = IQLConfig().training(beta=0.5, expectile=0.7, gamma=0.9)
    value_loss, critic_loss, actor_loss, _ = iql_losses(net, data, config)
    with torch.no_grad():
        target_q = net.target_twin_q(torch.cat([data[c.OBS], data[c.ACTIONS]], -1)).numpy()
        v = net.values(data[c.OBS]).numpy()
        v_next = net.values(data[c.NEW_OBS]).numpy()
        q = net.q_values(data[c.OBS], data[c.ACTIONS]).numpy()
        inputs = net.forward_train({c.OBS: data[c.OBS]})[c.ACTION_DIST_INPUTS]
        logp = TanhGaussian(inputs).logp(data[c.ACTIONS]).numpy()
    u = target_q.min(0) - v
    expected_value = (np.where(u < 0, 0.3, 0.7) * u**2).mean()
    targets = data[c.REWARDS].numpy() + 0.9 * (1 - data[c.TERMINATEDS].numpy()) * v_next
    expected_critic = 0.5 * ((q - targets) ** 2).sum(0).mean()
    expected_actor = -(np.minimum(np.exp(u / 0.5), 100.0) * logp).mean()
    assert float(value_loss.detach()) == pytest.approx(expected_value, rel=1e-5)
    assert float(critic_loss.detach()) == pytest.approx(expected_critic, rel=1e-5)
    assert float(actor_loss.detach()) == pytest.approx(expected_actor, rel=1e-5)


def test_cql_refuses_discrete_actions_and_names_the_discrete_variant():
    from tunerl.core.rl_module import UnsupportedSpaceError

    with pytest.raises(UnsupportedSpaceError, match="DiscreteCQLConfig"):
        CQLConfig().environment("CartPole-v1").offline_data(input_="x").build_algo()
