from tunerl.algorithms.marwil.marwil import MARWIL, MARWILConfig, MARWILLearner, marwil_loss

__all__ = ["MARWIL", "MARWILConfig", "MARWILLearner", "marwil_loss"]
