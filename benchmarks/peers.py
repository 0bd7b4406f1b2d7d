"""The peers' runs: Stable-Baselines3 and RLlib PPO on CartPole-v1 with their own tuned
settings, measured as tunerl is (see ppo_cartpole.py). Each runs in the peer interpreter
(`--peer-python`), so this module imports nothing outside the standard library at the top.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable

# rl-baselines3-zoo, hyperparams/ppo.yml, "CartPole-v1" (marked "# Tuned" there).
SB3_ZOO_CARTPOLE = {
    "n_steps": 32,
    "batch_size": 256,
    "gae_lambda": 0.8,
    "gamma": 0.98,
    "n_epochs": 20,
    "ent_coef": 0.0,
}
SB3_ZOO_NUM_ENVS = 8
SB3_ZOO_LR, SB3_ZOO_CLIP = 1e-3, 0.2  # lin_1e-3, lin_0.2: decay linearly to 0 ...
SB3_ZOO_TIMESTEPS = 100_000  # ... over the zoo's n_timesteps, where SB3 stops training.

# RLlib's tuned example (rllib/tuned_examples/ppo/cartpole_ppo.py, "reach 450 within 300k
# steps"); it sets no env runners, so PPOConfig's default of 2 applies.
RLLIB_TUNED_TRAINING = {"lr": 0.0003, "num_epochs": 6, "vf_loss_coeff": 0.01}
RLLIB_TUNED_MODEL = {"fcnet_hiddens": [32], "fcnet_activation": "linear", "vf_share_layers": True}


def _linear(initial: float) -> Callable[[float], float]:
    """The zoo's `lin_<value>`: SB3 passes progress_remaining, 1 at the start, 0 at the end."""
    return lambda progress_remaining: progress_remaining * initial


def run_sb3(seed: int, target: float, max_steps: int, clock: Callable[[], float]) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class StopAtTarget(BaseCallback):
        """After each rollout, the mean return of the last 100 finished episodes (SB3's
        ep_info_buffer, filled from the Monitor wrappers' infos). The time is taken after
        the update that follows, as tunerl and RLlib report after a whole iteration."""

        def __init__(self) -> None:
            super().__init__()
            self.stop, self.reached, self.end_s = False, False, None
            self.return_mean, self.env_steps = math.nan, 0

        def _on_rollout_end(self) -> None:
            episodes = self.model.ep_info_buffer
            self.return_mean = statistics.fmean(e["r"] for e in episodes) if episodes else math.nan
            self.env_steps = self.model.num_timesteps
            self.reached = self.return_mean >= target
            self.stop = self.reached or self.env_steps >= max_steps

        def _on_rollout_start(self) -> None:
            if self.stop and self.end_s is None:
                self.end_s = clock()

        def _on_step(self) -> bool:
            return not self.stop

    env = make_vec_env("CartPole-v1", n_envs=SB3_ZOO_NUM_ENVS, seed=seed)
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=_linear(SB3_ZOO_LR),
        clip_range=_linear(SB3_ZOO_CLIP),
        seed=seed,
        device="cpu",
        **SB3_ZOO_CARTPOLE,
    )
    startup_s = clock()
    callback = StopAtTarget()
    model.learn(total_timesteps=SB3_ZOO_TIMESTEPS, callback=callback)
    end_s = callback.end_s if callback.end_s is not None else clock()
    return {
        "reached": callback.reached,
        "end_s": end_s,
        "startup_s": startup_s,
        "env_steps": callback.env_steps,
        "return_mean": callback.return_mean,
        "settings": {
            **SB3_ZOO_CARTPOLE,
            "n_envs": SB3_ZOO_NUM_ENVS,
            "learning_rate": f"lin_{SB3_ZOO_LR}",
            "clip_range": f"lin_{SB3_ZOO_CLIP}",
            "n_timesteps": SB3_ZOO_TIMESTEPS,
        },
    }


def run_rllib(
    seed: int, target: float, max_steps: int, clock: Callable[[], float], num_env_runners: int
) -> dict:
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=num_env_runners)
        .training(**RLLIB_TUNED_TRAINING)
        .rl_module(model_config=DefaultModelConfig(**RLLIB_TUNED_MODEL))
        .debugging(seed=seed)
    )
    # As tunerl starts Ray: no dashboard, warnings only.
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    algo = config.build_algo()
    startup_s = clock()
    reached, return_mean, env_steps = False, math.nan, 0
    while not reached and env_steps < max_steps:
        result = algo.train()
        runners = result.get("env_runners", {})
        return_mean = float(runners.get("episode_return_mean", math.nan))
        env_steps = int(
            runners.get("num_env_steps_sampled_lifetime")
            or result.get("num_env_steps_sampled_lifetime", 0)
        )
        reached = return_mean >= target
    end_s = clock()
    algo.stop()
    ray.shutdown()
    return {
        "reached": reached,
        "end_s": end_s,
        "startup_s": startup_s,
        "env_steps": env_steps,
        "return_mean": return_mean,
        "settings": {
            **RLLIB_TUNED_TRAINING,
            "model_config": RLLIB_TUNED_MODEL,
            "num_env_runners": num_env_runners,
        },
    }
