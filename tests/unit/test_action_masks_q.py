"""Action masks in the Q-learning modules: DQN's (and discrete CQL's) Q-values and
epsilon-greedy, discrete SAC's actor, soft values and per-state target entropy."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.unit.test_action_masks import NUM_ACTIONS, flat_batch, masked_space, random_masks
from tunerl.core import columns
from tunerl.core.distributions import Categorical, sample_with_logp
from tunerl.core.q_learning_losses import q_td_loss
from tunerl.core.replay_buffers import N_STEP_DISCOUNT
from tunerl.core.rl_module.q_network import Q_VALUES, DQNModule
from tunerl.core.rl_module.rl_module import MASKED_LOGIT
from tunerl.core.rl_module.soft_actor_critic import SACModule
from tunerl.core.soft_actor_critic_losses import (
    DISCRETE_TARGET_ENTROPY_SCALE,
    actor_and_alpha_losses,
    critic_loss,
    target_entropy,
)
from tunerl.examples.envs.classes.action_mask_env import ActionMaskEnv

ACTIONS = gym.spaces.Discrete(NUM_ACTIONS)
MODEL = {"fcnet_hiddens": [16], "fcnet_activation": "relu"}


def dqn_module() -> DQNModule:
    module = DQNModule(masked_space("observation"), ACTIONS, model_config=MODEL)
    with torch.no_grad():  # the masked actions would win without the mask
        module.q_net.advantage.bias.copy_(torch.linspace(5.0, -5.0, NUM_ACTIONS))
        module.target_q_net.advantage.bias.copy_(torch.linspace(5.0, -5.0, NUM_ACTIONS))
    return module


def sac_module() -> SACModule:
    module = SACModule(masked_space("observation"), ACTIONS, model_config=MODEL)
    with torch.no_grad():
        module.actor_head.bias.copy_(torch.linspace(5.0, -5.0, NUM_ACTIONS))
    return module


def transitions(masks: np.ndarray, next_masks: np.ndarray) -> dict[str, torch.Tensor]:
    space = masked_space("observation")
    actions = torch.as_tensor([np.flatnonzero(row)[0] for row in masks])
    return {
        columns.OBS: flat_batch(space, masks, seed=0),
        columns.NEW_OBS: flat_batch(space, next_masks, seed=1),
        columns.ACTIONS: actions,
        columns.REWARDS: torch.ones(len(masks)),
        columns.TERMINATEDS: torch.zeros(len(masks)),
        N_STEP_DISCOUNT: torch.full((len(masks),), 0.99),
    }


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_dqn_never_explores_nor_chooses_an_illegal_action(epsilon):
    module = dqn_module()
    module.epsilon.fill_(epsilon)
    masks = random_masks(2000)
    batch = {columns.OBS: flat_batch(masked_space("observation"), masks)}
    generator = torch.Generator().manual_seed(0)
    rows = np.arange(len(masks))
    explore = Categorical(module.forward_exploration(batch)[columns.ACTION_DIST_INPUTS])
    actions, _ = sample_with_logp(explore, generator)
    assert masks[rows, actions.numpy()].all()
    greedy = module.forward_inference(batch)[Q_VALUES].argmax(-1).numpy()
    assert masks[rows, greedy].all()
    if epsilon == 1.0:  # uniform over the legal actions: 1 / (number legal) each
        probs = explore.logits.exp()
        expected = masks / masks.sum(1, keepdims=True)
        np.testing.assert_allclose(probs.numpy(), expected, atol=1e-6)


def test_dqn_bootstraps_from_the_best_legal_next_action_and_stays_finite_without_one():
    module = dqn_module()
    masks, next_masks = random_masks(64, seed=1), random_masks(64, seed=2)
    next_masks[0] = 0  # a final observation may mask every action
    batch = transitions(masks, next_masks)
    next_q = module.target_q_values(batch[columns.NEW_OBS])
    legal = torch.as_tensor(next_masks, dtype=torch.bool)
    assert (next_q[1:][~legal[1:]] == MASKED_LOGIT).all()
    assert (next_q[1:][legal[1:]] > MASKED_LOGIT).all()
    assert torch.isfinite(next_q[0]).all() and (next_q[0] > MASKED_LOGIT).all()
    for double_q in (True, False):
        out = q_td_loss(module, batch, double_q, "huber")
        assert torch.isfinite(out.loss) and out.td_errors.abs().max() < 100.0
        out.loss.backward()


def test_dqn_reads_the_observation_without_the_mask():
    module = dqn_module()
    assert module.q_net.encoder.layers[0].in_features == 4


def test_sac_gives_illegal_actions_no_probability_and_finite_losses():
    module = sac_module()
    masks, next_masks = random_masks(256, seed=3), random_masks(256, seed=4)
    next_masks[0] = 0
    batch = transitions(masks, next_masks)
    logits = module.forward_train({columns.OBS: batch[columns.OBS]})[columns.ACTION_DIST_INPUTS]
    probs = Categorical(logits).logits.exp()
    legal = torch.as_tensor(masks, dtype=torch.bool)
    assert probs[~legal].max() == 0.0
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(masks)))
    critic = critic_loss(module, batch)
    target = target_entropy("auto", ACTIONS, module.legal_actions(batch[columns.OBS]))
    actor, alpha, _ = actor_and_alpha_losses(module, batch, target)
    for loss in (critic.loss, actor, alpha):
        assert torch.isfinite(loss)
    (critic.loss + actor + alpha).backward()
    for name, parameter in module.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), name


def test_sac_auto_target_entropy_is_per_state_over_the_legal_actions():
    module = sac_module()
    masks = random_masks(32, seed=5)
    masks[0] = 0
    masks[0, 2] = 1  # one legal action: a target of 0
    obs = flat_batch(masked_space("observation"), masks)
    target = target_entropy("auto", ACTIONS, module.legal_actions(obs))
    expected = DISCRETE_TARGET_ENTROPY_SCALE * np.log(masks.sum(1))
    np.testing.assert_allclose(target.numpy(), expected, rtol=1e-6)
    assert target[0] == 0.0
    assert target_entropy(0.3, ACTIONS, module.legal_actions(obs)) == 0.3
    unmasked = SACModule(gym.spaces.Box(-1, 1, (4,)), ACTIONS, model_config=MODEL)
    assert unmasked.legal_actions(obs[:, :4]) is None


# Every algorithm that takes Discrete actions (CQL and IQL are continuous); the offline ones
# train on data recorded from the env, which is legal by construction.
DISCRETE_NAMES = [
    "PPO",
    "DQN",
    "SAC",
    "APPO",
    "IMPALA",
    "BC",
    "MARWIL",
    "DiscreteCQL",
    "VPG",
    "A2C",
]


@pytest.mark.parametrize("algo", DISCRETE_NAMES)
def test_every_discrete_algorithm_trains_on_the_env_that_raises_on_illegal_actions(algo):
    from tests.contract.helpers import tiny_config

    # Evaluation acts greedily in the env too (the offline algorithms act only there).
    config = tiny_config(algo, env="ActionMaskEnv").evaluation(
        evaluation_interval=1, evaluation_duration=2
    )
    built = config.build_algo()
    try:
        for _ in range(2):
            result = built.train()
        assert result["num_env_steps_trained_lifetime"] > 0
        assert result["evaluation"]["env_runners"]["num_episodes"] >= 2
    finally:
        built.stop()


def test_action_mask_env_refuses_an_illegal_action_and_unknown_config():
    env = ActionMaskEnv({"num_actions": 4, "legal_prob": 0.25})
    obs, _ = env.reset(seed=0)
    illegal = np.flatnonzero(obs["action_mask"] == 0)
    assert len(illegal) > 0
    with pytest.raises(ValueError, match=f"action {illegal[0]} is illegal"):
        env.step(illegal[0])
    with pytest.raises(ValueError, match=r"\['num_action'\] are unknown"):
        ActionMaskEnv({"num_action": 4})
