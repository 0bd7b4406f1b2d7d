from tunerl.algorithms.ppo.ppo import PPO, PPOConfig, PPOLearner, ppo_loss

__all__ = ["PPO", "PPOConfig", "PPOLearner", "ppo_loss"]
