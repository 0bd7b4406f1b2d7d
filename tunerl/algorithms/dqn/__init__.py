from tunerl.algorithms.dqn.dqn import DQN, DQNConfig, DQNLearner, dqn_loss
from tunerl.algorithms.dqn.dqn_module import DQNModule

__all__ = ["DQN", "DQNConfig", "DQNLearner", "DQNModule", "dqn_loss"]
