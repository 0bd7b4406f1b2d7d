from tunerl.algorithms.impala.impala import IMPALA, IMPALAConfig, IMPALALearner, impala_loss

__all__ = ["IMPALA", "IMPALAConfig", "IMPALALearner", "impala_loss"]
