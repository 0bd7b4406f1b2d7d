from tunerl.algorithms.appo.appo import APPO, APPOConfig, APPOLearner, appo_loss

__all__ = ["APPO", "APPOConfig", "APPOLearner", "appo_loss"]
