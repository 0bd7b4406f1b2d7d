"""tunerl: reinforcement-learning algorithms as Ray Tune Trainables.

from tunerl.algorithms.ppo import PPOConfig
algo = PPOConfig().environment("CartPole-v1").build_algo()
result = algo.train()
"""

__version__ = "0.1.0"

from tunerl.algorithms.ppo import PPO, PPOConfig  # noqa: E402
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

ALGORITHMS: dict[str, type[Algorithm]] = {"PPO": PPO}


def _register_with_tune() -> None:
    """Lets Tune find the algorithms by name: `tune.Tuner("PPO", ...)`."""
    from ray.tune.registry import register_trainable

    for name, algo_class in ALGORITHMS.items():
        register_trainable(name, algo_class)


_register_with_tune()

__all__ = [
    "ALGORITHMS",
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
    "Learner",
    "MultiAgentBatch",
    "PPOConfig",
    "RLModule",
    "RLModuleSpec",
    "SampleBatch",
    "concat_samples",
    "register_env",
]
