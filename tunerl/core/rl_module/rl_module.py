"""RLModule: the torch network that acts in the env runners and is trained by the learner.

A custom module subclasses `RLModule`, builds its layers in `setup()` and maps a batch to
`{"action_dist_inputs": ..., "vf_preds": ...}` in `_forward()`; that is all:

    class MyModule(RLModule):
        def setup(self):
            self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))

        def _forward(self, batch):
            out = self.net(batch["obs"])
            return {"action_dist_inputs": out[:, :2], "vf_preds": out[:, 2]}

Observations are normalized before `_forward` when the algorithm runs an observation filter;
its running statistics are buffers of the module, so they travel with every weight sync and
every checkpoint, and a deployed module normalizes exactly as it did in training.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from tunerl.core import checkpoint_io, class_resolution, columns, spaces_json
from tunerl.core.distributions import Bernoulli, Categorical, DiagGaussian, MultiCategorical

MODULE_STATE_FILE = "module_state.pt"
MODULE_SPEC_FILE = "module_spec.json"


def _tanh(x: torch.Tensor) -> torch.Tensor:
    # tanh(x) = 2 * sigmoid(2x) - 1. On the CPU build this runs on, torch.tanh of a 512x64
    # tensor takes ~100 us and torch.sigmoid ~15 us (benchmarks/README.md), and the MLP's
    # activations were the largest cost of sampling and learning.
    return torch.sigmoid(2.0 * x).mul(2.0).sub(1.0)


ACTIVATIONS = {
    "tanh": _tanh,
    "relu": torch.relu,
    "elu": nn.functional.elu,
    "silu": nn.functional.silu,
    "swish": nn.functional.silu,
}
DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "fcnet_hiddens": [64, 64],
    "fcnet_activation": "tanh",
    "vf_share_layers": False,
    "free_log_std": False,
}


class UnsupportedSpaceError(ValueError):
    """The default module cannot build a network for this observation or action space."""


class RunningMeanStd(nn.Module):
    """Running mean and variance of observations (Chan et al.'s parallel update), as buffers.
    `update()` merges the moments of a new chunk; `forward()` normalizes and clips."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0):
        super().__init__()
        self.clip = clip
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))

    def update(self, count: float, mean: np.ndarray, var: np.ndarray) -> None:
        if count == 0:
            return
        mean = torch.as_tensor(mean, dtype=torch.float64)
        var = torch.as_tensor(var, dtype=torch.float64)
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        m2 = self.var * self.count + var * count + delta.pow(2) * self.count * count / total
        self.var.copy_(m2 / total)
        self.count.fill_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.count == 0:
            return obs
        normalized = (obs - self.mean.to(obs.dtype)) / (self.var.to(obs.dtype) + 1e-8).sqrt()
        return normalized.clamp(-self.clip, self.clip)


def observation_moments(obs: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, mean, variance) of a chunk of observations, for `RunningMeanStd.update`."""
    obs = np.asarray(obs, dtype=np.float64)
    return len(obs), obs.mean(axis=0), obs.var(axis=0)


class RLModule(nn.Module):
    """Base class of every module. Subclasses define `setup()` and `_forward()`; override
    `_forward_inference`, `_forward_exploration` or `_forward_train` only where they differ."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: dict | None = None,
        observation_filter: str = "NoFilter",
    ):
        super().__init__()
        self.observation_space = observation_space
        self.action_space = action_space
        self.model_config = {**DEFAULT_MODEL_CONFIG, **(model_config or {})}
        self.observation_filter = observation_filter
        self.obs_normalizer: RunningMeanStd | None = None
        if observation_filter == "MeanStdFilter":
            if not isinstance(observation_space, gym.spaces.Box):
                raise UnsupportedSpaceError(
                    "observation_filter='MeanStdFilter' needs a Box observation space; got "
                    f"{observation_space}. Use observation_filter='NoFilter'."
                )
            self.obs_normalizer = RunningMeanStd(observation_space.shape)
        self.setup()

    def setup(self) -> None:
        """Builds the layers."""
        raise NotImplementedError(f"{type(self).__name__} must define setup().")

    def _forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Maps `{"obs": tensor}` to `{"action_dist_inputs": ..., "vf_preds": ...}`."""
        raise NotImplementedError(f"{type(self).__name__} must define _forward().")

    def _forward_inference(self, batch):
        return self._forward(batch)

    def _forward_exploration(self, batch):
        return self._forward(batch)

    def _forward_train(self, batch):
        return self._forward(batch)

    def _preprocess(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.obs_normalizer is None:
            return batch
        return {**batch, columns.OBS: self.obs_normalizer(batch[columns.OBS])}

    def forward_inference(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Greedy acting (deployment, evaluation with `explore=False`)."""
        with torch.inference_mode():
            return self._forward_inference(self._preprocess(batch))

    def forward_exploration(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Acting while collecting training data."""
        with torch.inference_mode():
            return self._forward_exploration(self._preprocess(batch))

    def forward_train(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The learner's pass, with gradients."""
        return self._forward_train(self._preprocess(batch))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.forward_train(batch)

    def compute_values(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """V(obs) for every row, without gradients."""
        with torch.no_grad():
            return self._forward_train(self._preprocess(batch))[columns.VF_PREDS]

    def update_observation_filter(self, obs) -> None:
        """Merges a batch of raw observations into the filter's statistics (no-op without a
        filter). Algorithms call it after learning on the batch, so the batch was trained
        with the statistics it was sampled with."""
        if self.obs_normalizer is not None:
            self.obs_normalizer.update(*observation_moments(obs))

    def get_action_dist_cls(self) -> Callable[[torch.Tensor], Any]:
        """The action distribution over `action_dist_inputs` (see `action_distribution`)."""
        return action_distribution(self.action_space, type(self).__name__)[0]

    def get_state(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().cpu().clone() for name, value in self.state_dict().items()}

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)

    def spec(self) -> RLModuleSpec:
        return RLModuleSpec(
            module_class=type(self),
            observation_space=self.observation_space,
            action_space=self.action_space,
            model_config=self.model_config,
            observation_filter=self.observation_filter,
        )

    def save_to_path(self, path: str | os.PathLike) -> str:
        """Writes the module (weights, filter statistics and how to rebuild it) to `path`,
        atomically (the old checkpoint or the new one is there at every moment). Refuses a
        `path` that exists and is not a tunerl checkpoint."""
        with checkpoint_io.atomic_directory(path) as directory:
            self.write_to(directory)
        return os.path.abspath(path)

    def write_to(self, directory: Path) -> None:
        """Writes into an existing directory (the algorithm's checkpoint uses this)."""
        directory.mkdir(parents=True, exist_ok=True)
        checkpoint_io.write_json(directory / MODULE_SPEC_FILE, self.spec().to_json())
        checkpoint_io.save_tensors(directory / MODULE_STATE_FILE, self.get_state())
        checkpoint_io.write_manifest(directory)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, allow_import: Sequence[str] = ()) -> RLModule:
        """Loads a module written by `save_to_path`, or the module folder of an algorithm
        checkpoint (`learner_group/learner/rl_module/<module_id>`), without the algorithm.
        The module class must already be imported in this process, or its package be in
        `allow_import` (or $TUNERL_ALLOW_IMPORT); nothing else is imported."""
        with checkpoint_io.CheckpointReader(path) as reader:
            where = reader.path(MODULE_SPEC_FILE)
            spec = RLModuleSpec.from_json(reader.json(MODULE_SPEC_FILE), allow_import, where)
            state = reader.tensors(MODULE_STATE_FILE)
        try:
            module = spec.build()
        except Exception as error:  # noqa: BLE001 - a spec the module class refuses
            raise checkpoint_io.CheckpointError(
                f"{where}: {spec.module_class.__name__ if spec.module_class else 'the module'} "
                f"cannot be built from this spec ({type(error).__name__}: {error})."
            ) from None
        try:
            module.set_state(state)
        except Exception as error:  # noqa: BLE001 - wrong keys or shapes
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise checkpoint_io.CheckpointError(
                f"{reader.path(MODULE_STATE_FILE)} does not fit the module {MODULE_SPEC_FILE} "
                f"describes ({type(error).__name__}: {reason})."
            ) from None
        module.eval()
        return module


def default_module_class() -> type[RLModule]:
    """`DefaultRLModule`, what a spec without a `module_class` builds (imported here, as it
    subclasses RLModule)."""
    from tunerl.core.rl_module.default_rl_module import DefaultRLModule

    return DefaultRLModule


@dataclasses.dataclass
class RLModuleSpec:
    """How to build a module: its class, spaces and `model_config`. Spaces left as None are
    filled from the environment. `load_state_path`: a module checkpoint folder (an
    `rl_module/<module_id>/` of another run, or an export) whose weights the algorithm
    starts this module with (loaded under the checkpoint rules: nothing in it runs)."""

    module_class: type[RLModule] | None = None
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None
    model_config: dict | None = None
    observation_filter: str = "NoFilter"
    load_state_path: str | os.PathLike | None = None

    def build(self) -> RLModule:
        module_class = self.module_class or default_module_class()
        return module_class(
            self.observation_space,
            self.action_space,
            model_config=self.model_config,
            observation_filter=self.observation_filter,
        )

    def to_json(self) -> dict:
        return {
            "module_class": class_resolution.class_path(
                self.module_class or default_module_class()
            ),
            "observation_space": spaces_json.space_to_json(self.observation_space),
            "action_space": spaces_json.space_to_json(self.action_space),
            "model_config": self.model_config,
            "observation_filter": self.observation_filter,
        }

    @classmethod
    def from_json(
        cls,
        data: Any,
        allow_import: Sequence[str] = (),
        where: str | os.PathLike = MODULE_SPEC_FILE,
    ) -> RLModuleSpec:
        """The spec `to_json` wrote; the module class resolves as
        `class_resolution.resolve_class` allows (never by importing an unlisted module)."""
        error = checkpoint_io.CheckpointError
        if not isinstance(data, dict):
            raise error(f"{where} must hold a JSON object, not {type(data).__name__}.")
        missing = sorted(set(_SPEC_FIELDS) - set(data))
        if missing:
            raise error(f"{where}: fields {missing} are missing.")
        if not isinstance(data["model_config"], dict | None):
            raise error(f"{where}: model_config is {data['model_config']!r}; it must be an object.")
        if not isinstance(data["observation_filter"], str):
            raise error(f"{where}: observation_filter is {data['observation_filter']!r}.")
        spaces = {}
        for name in ("observation_space", "action_space"):
            try:
                spaces[name] = spaces_json.space_from_json(data[name])
            except checkpoint_io.CheckpointError as cause:
                raise error(f"{where}: {name}: {cause}") from None
            except Exception as cause:  # noqa: BLE001 - any malformed space description
                raise error(
                    f"{where}: {name} = {data[name]!r} is not a valid space "
                    f"({type(cause).__name__}: {cause})."
                ) from None
        module_class = class_resolution.resolve_class(
            data["module_class"], RLModule, f"{where}: module_class", allow_import
        )
        return cls(
            module_class=module_class,
            model_config=data["model_config"],
            observation_filter=data["observation_filter"],
            **spaces,
        )


# What `RLModuleSpec.to_json` writes.
_SPEC_FIELDS = (
    "module_class",
    "observation_space",
    "action_space",
    "model_config",
    "observation_filter",
)


# ------------------------------------------------------------------------------ spaces
# What the built-in modules read and act in; the errors that refuse other spaces quote these.
SUPPORTED_OBSERVATIONS = (
    "Box (any shape), Discrete, MultiDiscrete and MultiBinary observations, and Dict or Tuple "
    "spaces of those"
)
SUPPORTED_ACTIONS = "Discrete, MultiDiscrete, MultiBinary and float Box (any shape) actions"
_CUSTOM_MODULE = ".rl_module(rl_module_spec=RLModuleSpec(module_class=MyModule))"
_FLAT_SPACES = (
    gym.spaces.Box,
    gym.spaces.Discrete,
    gym.spaces.MultiDiscrete,
    gym.spaces.MultiBinary,
)


def flattened_by_env_runner(space: gym.Space) -> bool:
    """Dict and Tuple observations reach every module already flattened (by the env runner,
    with `gymnasium.spaces.utils.flatten`), so batches stay numeric arrays."""
    return isinstance(space, gym.spaces.Dict | gym.spaces.Tuple)


def _readable(space: gym.Space) -> bool:
    if isinstance(space, gym.spaces.Dict):
        return all(_readable(child) for child in space.spaces.values())
    if isinstance(space, gym.spaces.Tuple):
        return all(_readable(child) for child in space.spaces)
    return isinstance(space, _FLAT_SPACES)


def observation_size(space: gym.Space, reader: str = "The default RLModule") -> int:
    """The number of features `flatten_observations` makes of one observation (one-hot for
    Discrete and MultiDiscrete). `reader` names the module in the error for a space it
    cannot read."""
    if not _readable(space):
        raise UnsupportedSpaceError(
            f"{reader} cannot read {space} observations; it reads {SUPPORTED_OBSERVATIONS}. "
            "Wrap the env (e.g. gymnasium.wrappers.FlattenObservation, or "
            f"TransformObservation to a Box) or pass your own module: {_CUSTOM_MODULE}."
        )
    return int(gym.spaces.utils.flatdim(space))


def flatten_observations(space: gym.Space, obs: torch.Tensor) -> torch.Tensor:
    """A batch of observations of `space` as float features, one row per observation:
    Discrete and MultiDiscrete one-hot (start subtracted, as gymnasium's `flatten`), the rest
    flattened (Dict and Tuple arrive flat from the env runner)."""
    if isinstance(space, gym.spaces.Discrete):
        index = obs.long().reshape(-1) - int(space.start)
        return nn.functional.one_hot(index, int(space.n)).float()
    if isinstance(space, gym.spaces.MultiDiscrete):
        sizes = torch.as_tensor(space.nvec.reshape(-1), dtype=torch.long)
        offsets = torch.cumsum(sizes, 0) - sizes
        starts = torch.as_tensor(space.start.reshape(-1), dtype=torch.long)
        index = obs.long().reshape(len(obs), -1) - starts + offsets
        one_hot = torch.zeros(len(obs), int(sizes.sum()))
        return one_hot.scatter_(1, index, 1.0)
    return obs.reshape(obs.shape[0], -1).float()


# ------------------------------------------------------------------------- action masks
# The observation key of the legal-action mask (PettingZoo classic's and RLlib's examples').
ACTION_MASK = "action_mask"
# What an illegal action's logit becomes: far below any logit a network outputs, but finite,
# so log-softmax, entropy and KL stay finite (0 * -inf is nan), also in a row that masks
# every action (a game's final observation), which then keeps the network's distribution.
MASKED_LOGIT = -1e9


@dataclasses.dataclass(frozen=True)
class ActionMaskLayout:
    """Where the mask and the rest of a flattened `Dict({"action_mask": ..., ...})`
    observation sit. `observation_space` is the non-mask part (the one other subspace, or a
    Dict of the others), `observation_columns` its columns in the flat observation and
    `mask_columns` the mask's (the env runner flattens Dict keys in the space's order)."""

    observation_space: gym.Space
    observation_columns: torch.Tensor
    mask_columns: slice

    @property
    def observation_size(self) -> int:
        return len(self.observation_columns)

    def split(self, flat_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the non-mask features, the legal-action mask as bools) of a flat batch."""
        legal = flat_obs[:, self.mask_columns] > 0.5
        return flat_obs.index_select(1, self.observation_columns), legal


def action_mask_layout(
    obs_space: gym.Space, action_space: gym.Space, reader: str = "The default RLModule"
) -> ActionMaskLayout | None:
    """The layout of an action-masked observation space: a Dict with an `"action_mask"`
    (MultiBinary(n) or a Box of n values, 1 = legal) beside the observation (under any other
    key: PettingZoo's `"observation"`, RLlib's `"observations"`), for a Discrete(n) action
    space. None for any other observation space. Raises UnsupportedSpaceError for a mask
    that does not fit the action space."""
    if not isinstance(obs_space, gym.spaces.Dict) or ACTION_MASK not in obs_space.spaces:
        return None
    mask_space = obs_space.spaces[ACTION_MASK]
    others = {key: space for key, space in obs_space.spaces.items() if key != ACTION_MASK}
    mask_size = (
        int(np.prod(mask_space.shape))
        if isinstance(mask_space, gym.spaces.MultiBinary | gym.spaces.Box)
        else None
    )
    problem = None
    if not others:
        problem = "it holds only the mask; put the observation beside it (key 'observation')"
    elif mask_size is None:
        problem = f"its {ACTION_MASK!r} is {mask_space}; give a MultiBinary(n) or a Box of n 0/1"
    elif not isinstance(action_space, gym.spaces.Discrete):
        problem = f"masks need a Discrete action space, not {action_space}"
    elif mask_size != int(action_space.n):
        problem = (
            f"its {ACTION_MASK!r} has {mask_size} entries but the action space "
            f"{action_space} has {int(action_space.n)} actions"
        )
    if problem is not None:
        raise UnsupportedSpaceError(
            f"{reader} cannot mask actions with the observation space {obs_space}: {problem}."
        )
    columns_of: dict[str, list[int]] = {}
    start = 0
    for key, space in obs_space.spaces.items():
        size = int(gym.spaces.utils.flatdim(space))
        columns_of[key] = list(range(start, start + size))
        start += size
    mask_columns = columns_of.pop(ACTION_MASK)
    observation_columns = [column for key in others for column in columns_of[key]]
    observation_space = next(iter(others.values())) if len(others) == 1 else gym.spaces.Dict(others)
    return ActionMaskLayout(
        observation_space=observation_space,
        observation_columns=torch.as_tensor(observation_columns, dtype=torch.long),
        mask_columns=slice(mask_columns[0], mask_columns[-1] + 1),
    )


def masked_input_size(
    obs_space: gym.Space, action_space: gym.Space, reader: str
) -> tuple[ActionMaskLayout | None, int]:
    """(the mask layout or None, the network's input size): the observation's flat size,
    without the mask's columns when it has one. Refuses what `reader` cannot read, mask or
    observation, with the usual errors."""
    layout = action_mask_layout(obs_space, action_space, reader)
    if layout is None:
        return None, observation_size(obs_space, reader)
    observation_size(layout.observation_space, reader)
    return layout, layout.observation_size


def mask_logits(logits: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
    """`logits` with every illegal action's set to `MASKED_LOGIT`: a Categorical over them
    never samples an illegal action (nor picks one greedily), and its log-probs and entropy
    are those of the legal actions alone."""
    return logits.masked_fill(~legal, MASKED_LOGIT)


def mask_action_values(values: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
    """`values` (Q-values, one per action) with every illegal action's set to `MASKED_LOGIT`,
    so a max or argmax over them sees the legal actions alone. A row with no legal action
    (a game's final observation) keeps its values: a bootstrap from it must stay finite
    when the episode was truncated there, not terminated."""
    return values.masked_fill(~legal & legal.any(dim=-1, keepdim=True), MASKED_LOGIT)


def action_distribution(
    space: gym.Space, module: str = "The default RLModule"
) -> tuple[Callable[[torch.Tensor], Any], int]:
    """The default module's action distribution for `space` and how many inputs it takes:
    Categorical (Discrete), independent categoricals (MultiDiscrete), independent
    Bernoullis (MultiBinary), a diagonal Gaussian over the flattened Box. Module actions
    are indices from 0 and flat vectors; the env runner maps them to the env's space."""
    if isinstance(space, gym.spaces.Discrete):
        return Categorical, int(space.n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        sizes = [int(size) for size in space.nvec.reshape(-1)]
        return functools.partial(MultiCategorical, sizes=sizes), sum(sizes)
    if isinstance(space, gym.spaces.MultiBinary):
        return Bernoulli, int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return DiagGaussian, 2 * int(np.prod(space.shape))
    raise UnsupportedSpaceError(
        f"{module} cannot act in {space}; it acts in {SUPPORTED_ACTIONS}. Wrap the env "
        f"(gymnasium.wrappers.TransformAction) or pass your own module: {_CUSTOM_MODULE}."
    )
