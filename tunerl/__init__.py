"""tunerl: reinforcement-learning algorithms as Ray Tune Trainables.

from tunerl.algorithms.ppo import PPOConfig
algo = PPOConfig().environment("CartPole-v1").build_algo()
result = algo.train()
"""

__version__ = "0.1.0"

from tunerl.algorithms.appo import APPO, APPOConfig  # noqa: E402
from tunerl.algorithms.dqn import DQN, DQNConfig  # noqa: E402
from tunerl.algorithms.impala import IMPALA, IMPALAConfig  # noqa: E402
from tunerl.algorithms.ppo import PPO, PPOConfig  # noqa: E402
from tunerl.algorithms.sac import SAC, SACConfig  # noqa: E402
from tunerl.core.algorithm import Algorithm  # noqa: E402
from tunerl.core.callbacks import Callbacks  # noqa: E402
from tunerl.core.checkpoint_io import CheckpointError  # noqa: E402
from tunerl.core.config import AlgorithmConfig, ConfigError  # noqa: E402
from tunerl.core.env_runner import EnvRunner  # noqa: E402
from tunerl.core.env_runner_group import EnvRunnerGroup  # noqa: E402
from tunerl.core.learner import Learner  # noqa: E402
from tunerl.core.rl_module import DefaultRLModule, RLModule, RLModuleSpec  # noqa: E402
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch, concat_samples  # noqa: E402
from tunerl.env.registry import EnvError, register_env  # noqa: E402
from tunerl.execution import synchronous_parallel_sample, train_one_step  # noqa: E402

ALGORITHMS: dict[str, type[Algorithm]] = {
    "PPO": PPO,
    "DQN": DQN,
    "SAC": SAC,
    "APPO": APPO,
    "IMPALA": IMPALA,
}


def _register_with_tune() -> None:
    """Lets Tune find the algorithms by name: `tune.Tuner("PPO", ...)`, and trial processes
    find the envs given to `register_env`."""
    from ray.tune.registry import register_trainable

    from tunerl.env.registry import reregister_envs

    for name, algo_class in ALGORITHMS.items():
        register_trainable(name, algo_class)
    reregister_envs()


def _install_ray_init_hook() -> None:
    # Tune's registry writes its entries into the Ray session that exists (or the next one to
    # start) and then forgets them, so after ray.shutdown() and a new ray.init() "PPO" would be
    # unknown. Registering again after every ray.init() keeps the names valid.
    import ray._private.worker

    hooks = ray._private.worker._post_init_hooks
    if _register_with_tune not in hooks:
        hooks.append(_register_with_tune)


_register_with_tune()
_install_ray_init_hook()

__all__ = [
    "ALGORITHMS",
    "APPO",
    "APPOConfig",
    "DQN",
    "DQNConfig",
    "PPO",
    "Algorithm",
    "AlgorithmConfig",
    "Callbacks",
    "CheckpointError",
    "ConfigError",
    "DefaultRLModule",
    "EnvError",
    "EnvRunner",
    "EnvRunnerGroup",
    "IMPALA",
    "IMPALAConfig",
    "Learner",
    "MultiAgentBatch",
    "PPOConfig",
    "RLModule",
    "RLModuleSpec",
    "SAC",
    "SACConfig",
    "SampleBatch",
    "concat_samples",
    "register_env",
    "synchronous_parallel_sample",
    "train_one_step",
]
