"""`tunerl export CHECKPOINT --format onnx|torchscript`: the module's greedy inference as one
file that runs without tunerl: ONNX (onnxruntime, optional extra `export`) or TorchScript
(`torch.jit.load`). The observation filter's statistics are folded in as constants, so the
file takes raw observations, as the env returns them.

Inputs: `obs`, a float32 batch (Box observations; the module's own dtype otherwise).
Outputs: `action_dist_inputs` (as `forward_inference` returns them) and `actions`, the most
likely action in the module's terms (Discrete: an index from 0; Box: the Gaussian's mean,
before scaling to the env's bounds).
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from tunerl.core import columns
from tunerl.core.rl_module import RLModule

FORMATS = ("onnx", "torchscript")


class InferenceOnly(nn.Module):
    """`module`'s greedy inference with its observation filter frozen into constants."""

    def __init__(self, module: RLModule):
        super().__init__()
        self.module = module.eval()
        normalizer = module.obs_normalizer
        self.normalize = normalizer is not None and float(normalizer.count) > 0
        if self.normalize:
            self.register_buffer("obs_mean", normalizer.mean.float().clone())
            self.register_buffer("obs_std", (normalizer.var.float() + 1e-8).sqrt())
            self.clip = float(normalizer.clip)
        self.discrete = isinstance(module.action_space, gym.spaces.Discrete)
        self.box = isinstance(module.action_space, gym.spaces.Box)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.normalize:
            obs = ((obs - self.obs_mean) / self.obs_std).clamp(-self.clip, self.clip)
        inputs = self.module._forward_inference({columns.OBS: obs})[columns.ACTION_DIST_INPUTS]
        if self.discrete:
            actions = inputs.argmax(dim=-1)
        elif self.box:
            actions = inputs[:, : inputs.shape[-1] // 2]
        else:
            actions = inputs
        return inputs, actions


def example_observations(module: RLModule, batch_size: int = 2) -> torch.Tensor:
    space = module.observation_space
    dtype = torch.float32 if space.dtype.kind == "f" else torch.int64
    return torch.as_tensor(np.stack([space.sample() for _ in range(batch_size)]), dtype=dtype)


def export_module(module: RLModule, out: str | os.PathLike, format: str) -> Path:  # noqa: A002
    """Writes `module`'s inference to `out` as `format` ("onnx" or "torchscript")."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}; one of {list(FORMATS)}")
    wrapper = InferenceOnly(module)
    example = example_observations(module)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if format == "torchscript":
            torch.jit.trace(wrapper, (example,)).save(str(out))
        else:
            torch.onnx.export(
                wrapper,
                (example,),
                str(out),
                input_names=["obs"],
                output_names=[columns.ACTION_DIST_INPUTS, "actions"],
                dynamic_axes={
                    "obs": {0: "batch"},
                    columns.ACTION_DIST_INPUTS: {0: "batch"},
                    "actions": {0: "batch"},
                },
                dynamo=False,
            )
    return out
