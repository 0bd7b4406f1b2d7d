"""SAC's and DQN's modules moved into tunerl/core (CQL builds on them); the old import paths
and the class paths saved in checkpoints before the move still name the same classes."""

from __future__ import annotations

import pytest

from tunerl.core.class_resolution import resolve_class
from tunerl.core.rl_module import RLModule
from tunerl.core.rl_module.q_network import DQNModule
from tunerl.core.rl_module.soft_actor_critic import SACModule


@pytest.mark.parametrize(
    ("old_path", "cls"),
    [
        ("tunerl.algorithms.sac.sac_module:SACModule", SACModule),
        ("tunerl.algorithms.dqn.dqn_module:DQNModule", DQNModule),
    ],
)
def test_a_checkpoints_old_class_path_resolves_to_the_moved_class(old_path, cls):
    import tunerl  # noqa: F401  (the package face imports every algorithm)

    assert resolve_class(old_path, RLModule, "module_spec.json") is cls


def test_the_old_import_paths_name_the_core_objects():
    from tunerl.algorithms.dqn import DQNModule as dqn_face
    from tunerl.algorithms.sac import SACModule as sac_face
    from tunerl.algorithms.sac import actor_and_alpha_losses, critic_loss
    from tunerl.core import soft_actor_critic_losses as losses

    assert sac_face is SACModule and dqn_face is DQNModule
    assert critic_loss is losses.critic_loss
    assert actor_and_alpha_losses is losses.actor_and_alpha_losses
