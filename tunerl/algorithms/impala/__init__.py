from tunerl.algorithms.impala.impala import (
    IMPALA,
    IMPALAConfig,
    IMPALALearner,
    impala_loss,
    vtrace_training_step,
)

__all__ = ["IMPALA", "IMPALAConfig", "IMPALALearner", "impala_loss", "vtrace_training_step"]
