"""Action masks: a Dict observation with an "action_mask" beside the observation, read by the
default module, which never samples nor picks an illegal action."""

import re

import gymnasium as gym
import numpy as np
import pytest
import torch

from tunerl.core import columns
from tunerl.core.distributions import sample_with_logp
from tunerl.core.rl_module import DefaultRLModule, RLModule, UnsupportedSpaceError
from tunerl.core.rl_module.rl_module import MASKED_LOGIT, action_mask_layout

NUM_ACTIONS = 6


def masked_space(obs_key: str, mask_space: gym.Space | None = None) -> gym.spaces.Dict:
    return gym.spaces.Dict(
        {
            "action_mask": mask_space or gym.spaces.MultiBinary(NUM_ACTIONS),
            obs_key: gym.spaces.Box(-1.0, 1.0, (4,), np.float32),
        }
    )


def flat_batch(space: gym.spaces.Dict, masks: np.ndarray, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    obs_key = next(key for key in space.spaces if key != "action_mask")
    rows = [
        gym.spaces.utils.flatten(
            space,
            {"action_mask": mask, obs_key: rng.uniform(-1, 1, 4).astype(np.float32)},
        )
        for mask in masks
    ]
    return torch.as_tensor(np.stack(rows), dtype=torch.float32)


def random_masks(num_rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = (rng.random((num_rows, NUM_ACTIONS)) < 0.4).astype(np.int8)
    masks[np.arange(num_rows), rng.integers(0, NUM_ACTIONS, num_rows)] = 1  # >= 1 legal
    return masks


def trained_away_from_legal(module: RLModule) -> None:
    """Pushes the policy head towards the actions the tests mask, so a mask that leaks
    shows up as illegal samples and not only as small probabilities."""
    with torch.no_grad():
        module.pi_head.bias.copy_(torch.linspace(5.0, -5.0, NUM_ACTIONS))


@pytest.mark.parametrize(
    ("obs_key", "mask_space"),
    [
        ("observation", None),  # PettingZoo classic's key
        ("observations", None),  # RLlib's examples' key
        ("observation", gym.spaces.Box(0, 1, (NUM_ACTIONS,), np.int8)),  # tictactoe's mask
    ],
)
def test_no_illegal_action_is_ever_sampled_or_chosen(obs_key, mask_space):
    space = masked_space(obs_key, mask_space)
    module = DefaultRLModule(space, gym.spaces.Discrete(NUM_ACTIONS))
    trained_away_from_legal(module)
    masks = random_masks(2000)
    batch = {columns.OBS: flat_batch(space, masks)}
    generator = torch.Generator().manual_seed(0)
    dist_cls = module.get_action_dist_cls()
    for forward in (module.forward_exploration, module.forward_inference, module.forward_train):
        dist = dist_cls(forward(batch)[columns.ACTION_DIST_INPUTS])
        for _ in range(5):
            actions, _ = sample_with_logp(dist, generator)
            assert masks[np.arange(len(masks)), actions.numpy()].all()
        greedy = dist.deterministic_sample().numpy()
        assert masks[np.arange(len(masks)), greedy].all()


def test_log_probs_of_legal_actions_sum_to_one_and_entropy_is_over_them():
    space = masked_space("observation")
    module = DefaultRLModule(space, gym.spaces.Discrete(NUM_ACTIONS))
    trained_away_from_legal(module)
    masks = random_masks(64, seed=1)
    out = module.forward_train({columns.OBS: flat_batch(space, masks)})
    dist = module.get_action_dist_cls()(out[columns.ACTION_DIST_INPUTS])
    probs = torch.stack(
        [dist.logp(torch.full((len(masks),), a)).exp() for a in range(NUM_ACTIONS)], dim=1
    )
    legal = torch.as_tensor(masks, dtype=torch.bool)
    torch.testing.assert_close(probs[legal.logical_not()], torch.zeros_like(probs[~legal]))
    torch.testing.assert_close((probs * legal).sum(1), torch.ones(len(masks)), atol=1e-5, rtol=0)
    # The entropy is the legal actions' alone: a row with one legal action has none.
    legal_probs = probs * legal
    expected = -(legal_probs * legal_probs.clamp(min=1e-30).log()).sum(1)
    torch.testing.assert_close(dist.entropy(), expected, atol=1e-5, rtol=0)
    single = legal.sum(1) == 1
    assert single.any()
    assert dist.entropy()[single].abs().max() < 1e-5


def test_gradients_reach_legal_logits_only_and_stay_finite():
    space = masked_space("observation")
    module = DefaultRLModule(space, gym.spaces.Discrete(NUM_ACTIONS))
    masks = random_masks(32, seed=2)
    masks[0] = 0  # a final observation may mask every action: no nan
    out = module.forward_train({columns.OBS: flat_batch(space, masks)})
    dist = module.get_action_dist_cls()(out[columns.ACTION_DIST_INPUTS])
    loss = -(dist.logp(torch.as_tensor(masks.argmax(1))).sum() + dist.entropy().sum())
    loss.backward()
    for name, parameter in module.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), name
    assert torch.isfinite(dist.entropy()).all()


def test_the_network_reads_the_observation_without_the_mask():
    space = masked_space("observation")
    module = DefaultRLModule(space, gym.spaces.Discrete(NUM_ACTIONS))
    assert module.obs_dim == 4
    obs = flat_batch(space, random_masks(8, seed=3))
    other_masks = obs.clone()
    other_masks[:, module.action_mask.mask_columns] = 1.0
    values = module.compute_values({columns.OBS: obs})
    torch.testing.assert_close(values, module.compute_values({columns.OBS: other_masks}))


def test_mask_columns_follow_the_flattened_key_order():
    # Keys sort as "a_first" < "action_mask" < "z_last": the mask sits between two parts.
    space = gym.spaces.Dict(
        {
            "z_last": gym.spaces.Discrete(3),
            "a_first": gym.spaces.Box(0.0, 1.0, (2,), np.float32),
            "action_mask": gym.spaces.MultiBinary(4),
        }
    )
    layout = action_mask_layout(space, gym.spaces.Discrete(4))
    sample = {
        "a_first": np.array([0.25, 0.5], np.float32),
        "action_mask": np.array([0, 1, 0, 1], np.int8),
        "z_last": 2,
    }
    flat = torch.as_tensor(gym.spaces.utils.flatten(space, sample), dtype=torch.float32)
    features, legal = layout.split(flat[None])
    assert legal.tolist() == [[False, True, False, True]]
    assert features.tolist() == [[0.25, 0.5, 0.0, 0.0, 1.0]]  # Box, then Discrete one-hot
    module = DefaultRLModule(space, gym.spaces.Discrete(4))
    logits = module.forward_inference({columns.OBS: flat[None]})[columns.ACTION_DIST_INPUTS]
    assert logits[0, [0, 2]].tolist() == [MASKED_LOGIT, MASKED_LOGIT]


@pytest.mark.parametrize(
    ("obs_space", "action_space", "message"),
    [
        (masked_space("observation"), gym.spaces.Discrete(5), "has 6 entries but"),
        (masked_space("observation"), gym.spaces.Box(-1, 1, (6,)), "need a Discrete action"),
        (
            gym.spaces.Dict({"action_mask": gym.spaces.MultiBinary(6)}),
            gym.spaces.Discrete(6),
            "holds only the mask",
        ),
        (
            masked_space("observation", gym.spaces.Discrete(6)),
            gym.spaces.Discrete(6),
            "give a MultiBinary(n)",
        ),
    ],
)
def test_a_mask_that_does_not_fit_is_refused_with_the_reason(obs_space, action_space, message):
    with pytest.raises(UnsupportedSpaceError, match=re.escape(message)):
        DefaultRLModule(obs_space, action_space)


def test_spaces_without_a_mask_are_read_as_before():
    space = gym.spaces.Dict(
        {
            "observation": gym.spaces.Box(-1.0, 1.0, (4,), np.float32),
            "other": gym.spaces.MultiBinary(6),
        }
    )
    module = DefaultRLModule(space, gym.spaces.Discrete(NUM_ACTIONS))
    assert module.action_mask is None
    assert module.obs_dim == 10
    assert action_mask_layout(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2)) is None
