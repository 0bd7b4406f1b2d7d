"""IS, WIS and PDIS on a tiny MDP whose every episode is enumerated: one state, two steps,
actions 0/1 with rewards 0/1; behaviour mu(1) = 0.5, target pi(1) = 0.8. The data holds each
of the four action sequences once (their behaviour probabilities are equal), so the
estimates have exact values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tunerl.offline.estimators import importance_sampling_estimates

GAMMA = 0.9
PI = {0: 0.2, 1: 0.8}


def four_episodes():
    episode, step, rewards, actions = [], [], [], []
    for index, sequence in enumerate(itertools.product([0, 1], repeat=2)):
        for t, action in enumerate(sequence):
            episode.append(index)
            step.append(t)
            actions.append(action)
            rewards.append(float(action))
    actions = np.array(actions)
    behaviour = np.full(len(actions), math.log(0.5))
    target = np.log(np.where(actions == 1, PI[1], PI[0]))
    return np.array(episode), np.array(step), np.array(rewards), behaviour, target


def test_importance_sampling_estimates_match_exact_values():
    estimates = importance_sampling_estimates(*four_episodes(), gamma=GAMMA)
    # The true value: E_pi[r0 + gamma r1] = 0.8 + 0.9 * 0.8 = 1.52. IS and PDIS are unbiased
    # and, with every sequence once at equal mu, exact.
    true_value = PI[1] + GAMMA * PI[1]
    assert estimates["is"] == pytest.approx(true_value)
    assert estimates["pdis"] == pytest.approx(true_value)
    # WIS: sum(w G) / sum(w); the weights (pi/mu products) sum to 4 here, so it is exact too.
    assert estimates["wis"] == pytest.approx(true_value)


def test_wis_differs_from_is_when_the_weights_do_not_average_to_one():
    episode, step, rewards, behaviour, target = four_episodes()
    keep = episode != 0  # drop the episode (0, 0): weights 0.64, 0.64, 2.56 for the rest
    estimates = importance_sampling_estimates(
        episode[keep], step[keep], rewards[keep], behaviour[keep], target[keep], GAMMA
    )
    w = np.array([0.16, 0.16, 0.64]) / 0.25
    g = np.array([GAMMA, 1.0, 1 + GAMMA])
    assert estimates["is"] == pytest.approx((w * g).mean())
    assert estimates["wis"] == pytest.approx((w * g).sum() / w.sum())
    # PDIS weighs r_t by the ratio product up to t only.
    pdis = [GAMMA * 0.4 * 1.6, 1.6 * 1 + GAMMA * 1.6 * 0.4 * 0, 1.6 + GAMMA * 1.6 * 1.6]
    assert estimates["pdis"] == pytest.approx(np.mean(pdis))


def test_the_behaviour_policy_itself_is_estimated_at_its_recorded_return(tmp_path):
    """Data whose action_logp is the module's own: every ratio is 1, so IS, WIS and PDIS all
    equal the mean discounted return of the recorded episodes."""
    import gymnasium as gym
    import torch

    from tunerl.core import columns as c
    from tunerl.core.rl_module import DefaultRLModule, RLModuleSpec
    from tunerl.core.sample_batch import MultiAgentBatch
    from tunerl.offline.estimators import estimate_policy_value
    from tunerl.offline.offline_data import OfflineData
    from tunerl.offline.output_writer import OutputWriter

    from .test_format import CARTPOLE, transitions

    model = {"fcnet_hiddens": [8], "fcnet_activation": "tanh"}
    spec = RLModuleSpec(DefaultRLModule, CARTPOLE.observation_space, CARTPOLE.action_space)
    spec.model_config = {"vf_share_layers": False, "free_log_std": False, **model}
    module = spec.build()
    batch = transitions(40, eps_len=10)
    with torch.no_grad():
        inputs = module.forward_train({c.OBS: torch.as_tensor(batch[c.OBS])})
        logp = module.get_action_dist_cls()(inputs[c.ACTION_DIST_INPUTS]).logp(
            torch.as_tensor(batch[c.ACTIONS])
        )
    batch[c.ACTION_LOGP] = logp.numpy()
    writer = OutputWriter(tmp_path, CARTPOLE.observation_space, CARTPOLE.action_space)
    writer.write(MultiAgentBatch({c.DEFAULT_MODULE_ID: batch}, len(batch)))
    writer.close()
    data = OfflineData(tmp_path, CARTPOLE.observation_space, gym.spaces.Discrete(2))
    estimates = estimate_policy_value(module, data, GAMMA)
    rewards = batch[c.REWARDS].reshape(4, 10)
    expected = (rewards * GAMMA ** np.arange(10)).sum(-1).mean()
    for key in ("is", "wis", "pdis"):
        assert estimates[key] == pytest.approx(expected, rel=1e-4), key
