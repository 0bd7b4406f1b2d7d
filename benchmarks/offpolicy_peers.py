"""The peers' off-policy runs: Stable-Baselines3 and RLlib DQN on CartPole-v1 and SAC on
Pendulum-v1, each with its own tuned settings, measured as tunerl is (see offpolicy.py).
They run in the peer interpreter (`--peer-python`), so this module imports nothing outside the
standard library at the top; ppo_cartpole.py's timing helper is standard library too.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from ppo_cartpole import _steps_per_s

# Env steps collected before the per-update timings, so that a replayed batch can be drawn
# (more than any batch size below and than RLlib's num_steps_sampled_before_learning_starts).
FILL_STEPS = 2000

# rl-baselines3-zoo, hyperparams/dqn.yml, "CartPole-v1" ("# Almost Tuned" there); one env.
SB3_ZOO_DQN_CARTPOLE = {
    "learning_rate": 2.3e-3,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "gamma": 0.99,
    "target_update_interval": 10,
    "train_freq": 256,
    "gradient_steps": 128,
    "exploration_final_eps": 0.04,
    "policy_kwargs": {"net_arch": [256, 256]},
}
# The zoo's exploration_fraction of 0.16 is a fraction of its n_timesteps of 50k: epsilon
# decays over 8k env steps. SB3 takes the fraction of what `learn()` is given, so the runs here
# pass 8k / --max-steps-dqn to keep the zoo's schedule under a longer budget.
SB3_ZOO_DQN_EXPLORATION_STEPS = 0.16 * 50_000

# rl-baselines3-zoo, hyperparams/sac.yml, "Pendulum-v1" (n_timesteps 20k): SAC's defaults
# (256x256 networks, batch 256, 1 update per env step, learning_starts 100, gamma 0.99,
# automatic entropy) with a constant learning rate of 1e-3; one env.
SB3_ZOO_SAC_PENDULUM = {"learning_rate": 1e-3}

# RLlib's tuned example, rllib/tuned_examples/dqn/cartpole_dqn.py (new API stack, "reach 450
# within 200k steps"; moved to rllib/examples/algorithms/dqn/ in later releases, same values).
# It sets no env runners: DQNConfig's default of 0 samples in the driver.
RLLIB_DQN_TRAINING = {
    "lr": 0.0005,
    "train_batch_size_per_learner": 32,
    "replay_buffer_config": {
        "type": "PrioritizedEpisodeReplayBuffer",
        "capacity": 50_000,
        "alpha": 0.6,
        "beta": 0.4,
    },
    "n_step": (2, 5),
    "double_q": True,
    "dueling": True,
    "epsilon": [(0, 1.0), (10_000, 0.02)],
}
RLLIB_DQN_MODEL = {
    "fcnet_hiddens": [256],
    "fcnet_activation": "tanh",
    "fcnet_bias_initializer": "zeros_",
    "head_fcnet_hiddens": [256],
    "head_fcnet_bias_initializer": "zeros_",
}

# RLlib's tuned example, rllib/tuned_examples/sac/pendulum_sac.py ("reach -250 within 20k
# steps"), as rllib/examples/algorithms/sac/pendulum_sac.py has it for the RLlib versions
# whose SAC critics have a fusion net (2.60 does). It smooths the reported return over 5
# episodes and sets no env runners (SACConfig's default: 0).
RLLIB_SAC_TRAINING = {
    "initial_alpha": 1.001,
    "actor_lr": 2e-4,
    "critic_lr": 8e-4,
    "alpha_lr": 9e-4,
    "lr": None,
    "target_entropy": "auto",
    "n_step": (2, 5),
    "tau": 0.005,
    "train_batch_size_per_learner": 256,
    "target_network_update_freq": 1,
    "replay_buffer_config": {
        "type": "PrioritizedEpisodeReplayBuffer",
        "capacity": 100_000,
        "alpha": 1.0,
        "beta": 0.0,
    },
    "num_steps_sampled_before_learning_starts": 256,
}
RLLIB_SAC_MODEL = {
    "fcnet_hiddens": [256, 256],
    "fcnet_activation": "relu",
    "fcnet_kernel_initializer": "xavier_uniform_",
    "head_fcnet_hiddens": [],
    "head_fcnet_activation": None,
    "head_fcnet_kernel_initializer": "orthogonal_",
    "head_fcnet_kernel_initializer_kwargs": {"gain": 0.01},
    "fusionnet_hiddens": [256, 256, 256],
    "fusionnet_activation": "relu",
}
RLLIB_SAC_SMOOTHING_EPISODES = 5

# The smoothing each library applies when not told otherwise: SB3's stats_window_size and
# RLlib's metrics_num_episodes_for_smoothing are 100 (RLlib's SAC example sets 5).
DEFAULT_SMOOTHING_EPISODES = 100


@dataclass
class Watch:
    """When a return smoothed over the last `window` episodes first reached `target`."""

    window: int
    target: float
    reached: bool = False
    end_s: float | None = None
    env_steps: int = 0
    return_mean: float = math.nan

    def update(self, returns: Sequence[float], env_steps: int) -> bool:
        """Checks the mean of the latest returns; see `record`."""
        recent = returns[-self.window :]
        return self.record(statistics.fmean(recent) if recent else math.nan, env_steps)

    def record(self, return_mean: float, env_steps: int) -> bool:
        """True if the target was reached just now (the caller stamps `end_s`). Once it is
        reached, the figures stay those of that moment."""
        if self.reached:
            return False
        self.return_mean, self.env_steps = return_mean, env_steps
        self.reached = return_mean >= self.target
        return self.reached


def ms_per_call(call: Callable[[], object]) -> float:
    """Milliseconds per call of `call`, timed as ppo_cartpole.py times sampling (0.5 s of
    warm-up, then 2.5 s)."""

    def once() -> int:
        call()
        return 1

    return 1000.0 / _steps_per_s(once)


# ------------------------------------------------------------------------------- SB3
def _sb3_model(algo: str, seed: int, max_steps: int):
    """The zoo-tuned model on a Monitor-wrapped env, and its settings for the report."""
    from stable_baselines3 import DQN, SAC
    from stable_baselines3.common.env_util import make_vec_env

    if algo == "dqn":
        env = make_vec_env("CartPole-v1", n_envs=1, seed=seed)
        settings = {
            **SB3_ZOO_DQN_CARTPOLE,
            "exploration_fraction": SB3_ZOO_DQN_EXPLORATION_STEPS / max_steps,
        }
        model = DQN("MlpPolicy", env, seed=seed, device="cpu", **settings)
    else:
        env = make_vec_env("Pendulum-v1", n_envs=1, seed=seed)
        settings = dict(SB3_ZOO_SAC_PENDULUM)
        model = SAC("MlpPolicy", env, seed=seed, device="cpu", **settings)
    return model, {**settings, "total_timesteps": max_steps}


def run_sb3(
    algo: str, seed: int, target: float, max_steps: int, window: int, clock: Callable[[], float]
) -> dict:
    from stable_baselines3.common.callbacks import BaseCallback

    class StopAtTarget(BaseCallback):
        """After each rollout, the mean of the last `window` finished episodes (SB3's
        ep_info_buffer, filled from the Monitor wrappers' infos, holds the last 100) and of
        the whole buffer (SB3's own smoothing). A figure reached at a rollout's end is timed
        after the update that follows, as tunerl and RLlib report after a whole iteration."""

        def __init__(self) -> None:
            super().__init__()
            self.watch = Watch(window, target)
            self.own = Watch(DEFAULT_SMOOTHING_EPISODES, target)
            self.unstamped: list[Watch] = []
            self.stop = False
            self.episodes_seen = -1

        def _on_rollout_end(self) -> None:
            episodes = self.model.ep_info_buffer
            if self.model._episode_num == self.episodes_seen:
                return  # no episode ended since the last check: nothing changed
            self.episodes_seen = self.model._episode_num
            returns = [episode["r"] for episode in episodes]
            for watch in (self.watch, self.own):
                if watch.update(returns, self.model.num_timesteps):
                    self.unstamped.append(watch)
            self.stop = self.watch.reached

        def _on_rollout_start(self) -> None:
            self.stamp()

        def stamp(self) -> None:
            for watch in self.unstamped:
                watch.end_s = clock()
            self.unstamped.clear()

        def _on_step(self) -> bool:
            return not self.stop

    model, settings = _sb3_model(algo, seed, max_steps)
    startup_s = clock()
    callback = StopAtTarget()
    model.learn(total_timesteps=max_steps, callback=callback)
    callback.stamp()
    end_s = callback.watch.end_s if callback.watch.reached else clock()
    watch = callback.watch
    if not watch.reached:  # the figures at the end of the budget, not at the last check
        returns = [episode["r"] for episode in model.ep_info_buffer]
        watch.update(returns, model.num_timesteps)
    return {
        "reached": watch.reached,
        "end_s": end_s,
        "startup_s": startup_s,
        "env_steps": watch.env_steps,
        "return_mean": watch.return_mean,
        "smoothing_episodes": window,
        "own_smoothing": asdict(callback.own) if window != DEFAULT_SMOOTHING_EPISODES else None,
        "settings": settings,
    }


def run_sb3_update(algo: str, seed: int, clock: Callable[[], float]) -> dict:
    """`model.train(gradient_steps=1)` on one replayed batch, and `replay_buffer.sample`."""
    model, settings = _sb3_model(algo, seed, FILL_STEPS)
    startup_s = clock()
    # Fill the buffer with random actions only: no updates before the timed ones.
    model.learning_starts = FILL_STEPS
    model.learn(total_timesteps=FILL_STEPS)
    buffer = model.replay_buffer
    sample_ms = ms_per_call(lambda: buffer.sample(model.batch_size))
    replay = buffer.sample(model.batch_size)
    # train() samples its own batch; hand it the one drawn above, so only the update is timed.
    buffer.sample = lambda batch_size, env=None: replay
    update_ms = ms_per_call(lambda: model.train(gradient_steps=1, batch_size=model.batch_size))
    return {
        "update_ms": update_ms,
        "sample_ms": sample_ms,
        "batch_size": model.batch_size,
        "startup_s": startup_s,
        "settings": settings,
    }


# ----------------------------------------------------------------------------- RLlib
# Returns of the episodes that ended, appended by the local env runner (num_env_runners=0,
# so it runs in this process): the smoothing here is taken over these, as SB3's over its
# ep_info_buffer, since RLlib's reported mean is not smoothed over episodes (run_rllib).
_episode_returns: list[float] = []


def _record_episode(*, episode, prev_episode_chunks=None, **kwargs) -> None:
    chunks = [*(prev_episode_chunks or []), episode]
    _episode_returns.append(float(sum(chunk.get_return() for chunk in chunks)))


def _rllib_config(algo: str, seed: int):
    """The tuned example's config, its smoothing, and its settings for the report."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    if algo == "dqn":
        from ray.rllib.algorithms.dqn import DQNConfig

        config = DQNConfig().environment("CartPole-v1")
        training, model, smoothing = RLLIB_DQN_TRAINING, RLLIB_DQN_MODEL, None
    else:
        from ray.rllib.algorithms.sac import SACConfig

        config = SACConfig().environment("Pendulum-v1")
        training, model = RLLIB_SAC_TRAINING, RLLIB_SAC_MODEL
        smoothing = RLLIB_SAC_SMOOTHING_EPISODES
    config = (
        config.training(**training)
        .rl_module(model_config=DefaultModelConfig(**model))
        .debugging(seed=seed)
    )
    if smoothing is not None:
        config.reporting(metrics_num_episodes_for_smoothing=smoothing)
    settings = {**training, "model_config": model, "num_env_runners": config.num_env_runners}
    return config, config.metrics_num_episodes_for_smoothing, settings


def _start_ray() -> None:
    import ray

    # As tunerl starts Ray: no dashboard, warnings only.
    ray.init(include_dashboard=False, logging_level=logging.WARNING)


def _env_steps(result: dict) -> int:
    runners = result.get("env_runners", {})
    return int(
        runners.get("num_env_steps_sampled_lifetime")
        or result.get("num_env_steps_sampled_lifetime", 0)
    )


def run_rllib(
    algo: str, seed: int, target: float, max_steps: int, window: int, clock: Callable[[], float]
) -> dict:
    """After each `train()`, the mean of the last `window` episodes the callback recorded.
    RLlib's own `env_runners/episode_return_mean` is followed on the side: as of 2.60 it
    averages the episodes of the last iteration only, whatever
    `metrics_num_episodes_for_smoothing` says (compare a window with the callback's record)."""
    import ray

    config, own_window, settings = _rllib_config(algo, seed)
    config.callbacks(on_episode_end=_record_episode)
    watch, own = Watch(window, target), Watch(own_window, target)
    _start_ray()
    rl_algo = config.build_algo()
    startup_s = clock()
    reported = math.nan
    while not watch.reached and watch.env_steps < max_steps:
        result = rl_algo.train()
        env_steps = _env_steps(result)
        reported = float(result.get("env_runners", {}).get("episode_return_mean", math.nan))
        watch.update(_episode_returns, env_steps)
        if own.record(reported, env_steps):
            own.end_s = clock()
    end_s = clock()
    rl_algo.stop()
    ray.shutdown()
    return {
        "reached": watch.reached,
        "end_s": end_s,
        "startup_s": startup_s,
        "env_steps": watch.env_steps,
        "return_mean": watch.return_mean,
        "smoothing_episodes": window,
        "own_smoothing": {**asdict(own), "metric": "env_runners/episode_return_mean"},
        "reported_return_mean": reported,
        "num_episodes": len(_episode_returns),
        "settings": {**settings, "metrics_num_episodes_for_smoothing": own_window},
    }


def run_rllib_update(algo: str, seed: int, clock: Callable[[], float]) -> dict:
    """`learner_group.update(episodes=...)` on one replayed batch (RLlib's learner connectors,
    which turn the episodes into a train batch, included), and the replay buffer's `sample`,
    called as DQN's and SAC's training_step call them."""
    import ray
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    config, _, settings = _rllib_config(algo, seed)
    _start_ray()
    rl_algo = config.build_algo()
    startup_s = clock()
    env_steps = 0
    while env_steps < FILL_STEPS:
        env_steps = _env_steps(rl_algo.train())
    buffer = rl_algo.local_replay_buffer
    batch_size = config.total_train_batch_size

    def sample():
        return buffer.sample(
            num_items=batch_size,
            n_step=config.n_step,
            gamma=config.gamma,
            beta=config.replay_buffer_config.get("beta"),
            sample_episodes=True,
        )

    sample_ms = ms_per_call(sample)
    episodes = sample()
    timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: env_steps}
    update_ms = ms_per_call(
        lambda: rl_algo.learner_group.update(episodes=episodes, timesteps=timesteps)
    )
    rl_algo.stop()
    ray.shutdown()
    return {
        "update_ms": update_ms,
        "sample_ms": sample_ms,
        "batch_size": batch_size,
        "startup_s": startup_s,
        "settings": settings,
    }
