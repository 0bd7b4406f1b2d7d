"""The peers' MuJoCo runs: Stable-Baselines3 and RLlib SAC (Hopper-v5, HalfCheetah-v5) and PPO
(HalfCheetah-v5) at the settings tunerl's experiments in experiments/mujoco/ hold, measured as
tunerl is (see mujoco_speed.py). They run in the peer interpreter (`--peer-python`), so this module
imports nothing outside the standard library at the top.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from offpolicy_peers import ms_per_call

# Stable-Baselines3's SAC defaults, which tunerl's sac_hopper / sac_halfcheetah experiments
# copy: lr 3e-4 (actor, critics, alpha), batch 256, [256, 256] ReLU, one update per env step
# from step 100, gamma 0.99, tau 0.005, a 1M buffer.
SAC_SETTINGS = {
    "learning_rate": 3e-4,
    "batch_size": 256,
    "buffer_size": 1_000_000,
    "learning_starts": 100,
    "gamma": 0.99,
    "tau": 0.005,
    "train_freq": 1,
    "gradient_steps": 1,
}
SAC_HIDDENS = [256, 256]

# rl-baselines3-zoo, hyperparams/ppo.yml, "HalfCheetah-v3" ("# Tuned"): normalize (obs and
# reward), one env, policy_kwargs log_std_init=-2, ortho_init=False, ReLU, pi/vf [256, 256].
ZOO_PPO_HALFCHEETAH = {
    "batch_size": 64,
    "n_steps": 512,
    "gamma": 0.98,
    "learning_rate": 2.0633e-05,
    "ent_coef": 0.000401762,
    "clip_range": 0.1,
    "n_epochs": 20,
    "gae_lambda": 0.92,
    "max_grad_norm": 0.8,
    "vf_coef": 0.58096,
}

# Episodes a return at a budget is averaged over (tunerl's experiments smooth over 10).
RETURN_WINDOW = 10


class Curve:
    """Every finished episode's return with the env steps sampled when it ended, and the wall
    seconds (process clock) when each budget was first passed. A tool that smooths itself
    (tunerl) passes its smoothed return to `check` instead of recording episodes."""

    def __init__(self, budgets: list[int], clock: Callable[[], float]):
        self.budgets, self.clock = sorted(budgets), clock
        self.episodes: list[tuple[int, float]] = []
        self.seconds: dict[int, float] = {}
        self.smoothed: dict[int, float | None] = {}

    def check(self, env_steps: int, smoothed: float | None = None) -> bool:
        """Stamps the budgets passed (with `smoothed`, if given); True once the last one is."""
        for budget in self.budgets:
            if env_steps >= budget and budget not in self.seconds:
                self.seconds[budget] = self.clock()
                # tunerl reports NaN before the first episode ended.
                self.smoothed[budget] = None if smoothed != smoothed else smoothed
        return len(self.seconds) == len(self.budgets)

    def points(self) -> list[dict]:
        """Per budget: seconds, and the mean return of the last RETURN_WINDOW episodes that
        ended within it (None before the first episode ended)."""
        out = []
        for budget in self.budgets:
            returns = [r for steps, r in self.episodes if steps <= budget][-RETURN_WINDOW:]
            mean = sum(returns) / len(returns) if returns else self.smoothed.get(budget)
            out.append(
                {
                    "env_steps": budget,
                    "seconds": self.seconds.get(budget),
                    "return_mean": mean,
                    "num_episodes": len([1 for steps, _ in self.episodes if steps <= budget]),
                }
            )
        return out


def sac_update_flops(obs_dim: int, action_dim: int, hiddens: list[int], batch: int) -> float:
    """Multiply-adds x 2 of one SAC update with a [hiddens] actor (mean and log-std head) and two
    [hiddens] critics on (obs, action): the actor forward on s' and s, the target and online
    critics' forwards, the critics' backward (inputs and weights, 2x), the critics' backward to
    the action (1x) and the actor's backward (2x)."""

    def weights(sizes: list[int]) -> int:
        return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))

    actor = weights([obs_dim, *hiddens, 2 * action_dim])
    critics = 2 * weights([obs_dim + action_dim, *hiddens, 1])
    return 2.0 * batch * (4 * actor + 6 * critics)


def mm_peak_gflops(seconds: float = 1.5) -> float:
    """The best of a plain `torch.mm` loop on square matrices (256 to 1024) in this process."""
    import torch

    best = 0.0
    for n in (256, 512, 1024):
        a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(a, b, out=out)
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            torch.mm(a, b, out=out)
            calls += 1
        best = max(best, 2.0 * n**3 * calls / elapsed / 1e9)
    return best


# ------------------------------------------------------------------------------- SB3
def _sb3_sac(env_id: str, seed: int):
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env(env_id, n_envs=1, seed=seed)
    model = SAC(
        "MlpPolicy",
        env,
        seed=seed,
        device="cpu",
        policy_kwargs={"net_arch": SAC_HIDDENS},
        **SAC_SETTINGS,
    )
    return model, {**SAC_SETTINGS, "net_arch": SAC_HIDDENS}


def _sb3_ppo(env_id: str, seed: int):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize
    from torch import nn

    env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed))
    policy_kwargs = {
        "log_std_init": -2,
        "ortho_init": False,
        "activation_fn": nn.ReLU,
        "net_arch": {"pi": [256, 256], "vf": [256, 256]},
    }
    model = PPO(
        "MlpPolicy", env, seed=seed, device="cpu", policy_kwargs=policy_kwargs,
        **ZOO_PPO_HALFCHEETAH,
    )  # fmt: skip
    settings = {**ZOO_PPO_HALFCHEETAH, "normalize": True, "policy_kwargs": str(policy_kwargs)}
    return model, settings


def run_sb3(algo: str, env_id: str, seed: int, budgets: list[int], clock) -> dict:
    from stable_baselines3.common.callbacks import BaseCallback

    model, settings = (_sb3_sac if algo == "sac" else _sb3_ppo)(env_id, seed)
    startup_s = clock()
    curve = Curve(budgets, clock)

    class Record(BaseCallback):
        """Each episode's return as Monitor reports it (unnormalized under VecNormalize); the
        budgets are stamped after the update that follows their step, as tunerl reports after
        a whole iteration."""

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    curve.episodes.append((self.model.num_timesteps, float(info["episode"]["r"])))
            return True

        def _on_rollout_start(self) -> None:
            curve.check(self.model.num_timesteps)

    model.learn(total_timesteps=max(budgets), callback=Record())
    curve.check(model.num_timesteps)
    update = _sb3_update_ms(model, algo)
    return run_result(curve, startup_s, clock, settings, update)


def _sb3_update_ms(model, algo: str) -> dict:
    """SAC: `model.train(gradient_steps=1)` on one batch drawn before. PPO: one `train()` (all
    epochs over the last rollout) per SGD step."""
    if algo == "sac":
        replay = model.replay_buffer.sample(model.batch_size)
        model.replay_buffer.sample = lambda batch_size, env=None: replay
        peak = mm_peak_gflops()
        ms = ms_per_call(lambda: model.train(gradient_steps=1, batch_size=model.batch_size))
        return {"update_ms": ms, "mm_peak_gflops": peak}
    steps = model.n_epochs * (model.n_steps // model.batch_size)
    start = time.perf_counter()
    model.train()
    return {"sgd_step_ms": (time.perf_counter() - start) * 1e3 / steps}


# ----------------------------------------------------------------------------- RLlib
_episode_returns: list[float] = []


def _record_episode(*, episode, prev_episode_chunks=None, **kwargs) -> None:
    chunks = [*(prev_episode_chunks or []), episode]
    _episode_returns.append(float(sum(chunk.get_return() for chunk in chunks)))


def _rllib_config(algo: str, env_id: str, seed: int):
    """The same settings in RLlib 2.60. SAC: its critic is an obs encoder and an action
    encoder fused by a layer (no plain MLP on (obs, action)), the closest here being one
    256-unit layer per stream, their concatenation to 256 units and a 256-unit head; the actor
    is [256] plus a [256] head: 256x256 like the others."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    if algo == "sac":
        from ray.rllib.algorithms.sac import SACConfig

        training = {
            "actor_lr": 3e-4,
            "critic_lr": 3e-4,
            "alpha_lr": 3e-4,
            "lr": None,
            "gamma": 0.99,
            "tau": 0.005,
            "n_step": 1,
            "train_batch_size_per_learner": 256,
            "num_steps_sampled_before_learning_starts": 100,
            "replay_buffer_config": {"type": "EpisodeReplayBuffer", "capacity": 1_000_000},
        }
        model = {
            "fcnet_hiddens": [256],
            "fcnet_activation": "relu",
            "head_fcnet_hiddens": [256],
            "head_fcnet_activation": "relu",
            "fusionnet_hiddens": [],
            "fusionnet_activation": "relu",
        }
        config = SACConfig().environment(env_id).env_runners(rollout_fragment_length=1)
    else:
        from ray.rllib.algorithms.ppo import PPOConfig

        zoo = ZOO_PPO_HALFCHEETAH
        training = {
            "lr": zoo["learning_rate"],
            "gamma": zoo["gamma"],
            "lambda_": zoo["gae_lambda"],
            "clip_param": zoo["clip_range"],
            "grad_clip": zoo["max_grad_norm"],
            "vf_loss_coeff": zoo["vf_coef"],
            "entropy_coeff": zoo["ent_coef"],
            "train_batch_size_per_learner": zoo["n_steps"],
            "minibatch_size": zoo["batch_size"],
            "num_epochs": zoo["n_epochs"],
        }
        model = {"fcnet_hiddens": [256, 256], "fcnet_activation": "relu", "vf_share_layers": False}
        config = (
            PPOConfig()
            .environment(env_id)
            .env_runners(num_env_runners=0, observation_filter="MeanStdFilter")
        )
    config = (
        config.training(**training)
        .rl_module(model_config=DefaultModelConfig(**model))
        .debugging(seed=seed)
        .callbacks(on_episode_end=_record_episode)
    )
    settings = {**training, "model_config": model, "num_env_runners": config.num_env_runners}
    return config, settings


def run_rllib(algo: str, env_id: str, seed: int, budgets: list[int], clock) -> dict:
    import ray

    config, settings = _rllib_config(algo, env_id, seed)
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    rl_algo = config.build_algo()
    startup_s = clock()
    curve = Curve(budgets, clock)
    env_steps, done = 0, False
    while not done:
        result = rl_algo.train()
        runners = result.get("env_runners", {})
        env_steps = int(
            runners.get("num_env_steps_sampled_lifetime")
            or result.get("num_env_steps_sampled_lifetime", 0)
        )
        seen = len(curve.episodes)
        curve.episodes += [(env_steps, r) for r in _episode_returns[seen:]]
        done = curve.check(env_steps)
    update = _rllib_update_ms(rl_algo, config, env_steps) if algo == "sac" else {}
    rl_algo.stop()
    ray.shutdown()
    return run_result(curve, startup_s, clock, settings, update)


def _rllib_update_ms(rl_algo, config, env_steps: int) -> dict:
    """`learner_group.update(episodes=...)` on one replayed batch, as SAC's training_step
    calls it (its learner connectors included)."""
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    episodes = rl_algo.local_replay_buffer.sample(
        num_items=config.total_train_batch_size,
        n_step=config.n_step,
        gamma=config.gamma,
        sample_episodes=True,
    )
    timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: env_steps}
    peak = mm_peak_gflops()
    ms = ms_per_call(lambda: rl_algo.learner_group.update(episodes=episodes, timesteps=timesteps))
    return {"update_ms": ms, "mm_peak_gflops": peak}


def run_result(curve: Curve, startup_s: float, clock, settings: dict, update: dict) -> dict:
    last = curve.points()[-1]
    return {
        "startup_s": startup_s,
        "end_s": clock(),
        "points": curve.points(),
        "ms_per_env_step": (last["seconds"] - startup_s) * 1e3 / last["env_steps"],
        "settings": settings,
        **update,
    }
