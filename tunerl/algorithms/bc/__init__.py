from tunerl.algorithms.bc.bc import BC, BCConfig, BCLearner, bc_loss

__all__ = ["BC", "BCConfig", "BCLearner", "bc_loss"]
