"""DQN's module lives in `tunerl.core.rl_module.q_network` (discrete CQL builds on it too);
this path stays for scripts and checkpoints that name `tunerl.algorithms.dqn.dqn_module`."""

from tunerl.core.rl_module.q_network import Q_VALUES, DQNModule, QNetwork

__all__ = ["Q_VALUES", "DQNModule", "QNetwork"]
