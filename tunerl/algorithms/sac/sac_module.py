"""SAC's module lives in `tunerl.core.rl_module.soft_actor_critic` (CQL builds on it too);
this path stays for scripts and checkpoints that name `tunerl.algorithms.sac.sac_module`."""

from tunerl.core.rl_module.soft_actor_critic import SACModule, TwinQ, upgrade_critic_state

__all__ = ["SACModule", "TwinQ", "upgrade_critic_state"]
