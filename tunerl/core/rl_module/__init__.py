"""RLModules: `RLModule` and `RLModuleSpec` (`tunerl.core.rl_module.rl_module`, RLlib's path),
the default MLP module (`default_rl_module`), and `MultiRLModule` / `MultiRLModuleSpec`
(`multi_rl_module`), which key modules by module id."""

from tunerl.core.rl_module.default_rl_module import MLP, DefaultRLModule, linear_head
from tunerl.core.rl_module.multi_rl_module import (
    MultiRLModule,
    MultiRLModuleSpec,
    check_module_id,
)
from tunerl.core.rl_module.rl_module import (
    ACTIVATIONS,
    DEFAULT_MODEL_CONFIG,
    MODULE_SPEC_FILE,
    MODULE_STATE_FILE,
    SUPPORTED_ACTIONS,
    SUPPORTED_OBSERVATIONS,
    RLModule,
    RLModuleSpec,
    RunningMeanStd,
    UnsupportedSpaceError,
    action_distribution,
    flatten_observations,
    flattened_by_env_runner,
    observation_moments,
    observation_size,
)

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_MODEL_CONFIG",
    "MLP",
    "MODULE_SPEC_FILE",
    "MODULE_STATE_FILE",
    "SUPPORTED_ACTIONS",
    "SUPPORTED_OBSERVATIONS",
    "DefaultRLModule",
    "MultiRLModule",
    "MultiRLModuleSpec",
    "RLModule",
    "RLModuleSpec",
    "RunningMeanStd",
    "UnsupportedSpaceError",
    "action_distribution",
    "check_module_id",
    "flatten_observations",
    "flattened_by_env_runner",
    "linear_head",
    "observation_moments",
    "observation_size",
]
