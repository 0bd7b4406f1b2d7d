from tunerl.algorithms.sac.sac import (
    SAC,
    SACConfig,
    SACLearner,
    actor_and_alpha_losses,
    critic_loss,
)
from tunerl.algorithms.sac.sac_module import SACModule

__all__ = ["SAC", "SACConfig", "SACLearner", "SACModule", "actor_and_alpha_losses", "critic_loss"]
