"""tunerl: reinforcement-learning algorithms as Ray Tune Trainables.

from tunerl.algorithms.ppo import PPOConfig
algo = PPOConfig().environment("CartPole-v1").build_algo()
result = algo.train()
"""

from tunerl._version import __version__
from tunerl.algorithms.appo import APPO, APPOConfig
from tunerl.algorithms.dqn import DQN, DQNConfig
from tunerl.algorithms.impala import IMPALA, IMPALAConfig
from tunerl.algorithms.ppo import PPO, PPOConfig
from tunerl.algorithms.sac import SAC, SACConfig
from tunerl.core.algorithm import Algorithm
from tunerl.core.callbacks import Callbacks
from tunerl.core.checkpoint_io import CheckpointError
from tunerl.core.config import AlgorithmConfig, ConfigError
from tunerl.core.env_runner import EnvRunner
from tunerl.core.env_runner_group import EnvRunnerGroup
from tunerl.core.learner import Learner, LossOutput
from tunerl.core.rl_module import (
    DefaultRLModule,
    MultiRLModule,
    MultiRLModuleSpec,
    RLModule,
    RLModuleSpec,
)
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch, concat_samples
from tunerl.env.multi_agent_env import MultiAgentEnv, make_multi_agent
from tunerl.env.multi_agent_env_runner import MultiAgentEnvRunner
from tunerl.env.registry import EnvError, register_env
from tunerl.examples.a2c import A2C
from tunerl.examples.vpg import VPG
from tunerl.execution import synchronous_parallel_sample, train_one_step
from tunerl.policy.policy import PolicySpec

ALGORITHMS: dict[str, type[Algorithm]] = {
    "PPO": PPO,
    "DQN": DQN,
    "SAC": SAC,
    "APPO": APPO,
    "IMPALA": IMPALA,
    # The 40-line examples of a custom algorithm: registered, so the contract suite and the
    # learning tests (experiments/vpg_cartpole.yaml, a2c_cartpole.yaml) cover them too.
    "VPG": VPG,
    "A2C": A2C,
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
    "LossOutput",
    "MultiAgentBatch",
    "MultiAgentEnv",
    "MultiAgentEnvRunner",
    "MultiRLModule",
    "MultiRLModuleSpec",
    "PPOConfig",
    "PolicySpec",
    "RLModule",
    "RLModuleSpec",
    "SAC",
    "SACConfig",
    "SampleBatch",
    "__version__",
    "concat_samples",
    "make_multi_agent",
    "register_env",
    "synchronous_parallel_sample",
    "train_one_step",
]
