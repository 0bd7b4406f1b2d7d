"""Learner: the module being trained, its optimizer, and minibatch SGD over a train batch.

A custom loss is a subclass that overrides `compute_loss(batch) -> (loss, stats)`; every
algorithm's loss is also a plain function of (module, batch, config) in its own file.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from tunerl.core import metrics as m
from tunerl.core.optim import Adam, clip_grad_norm_
from tunerl.core.rl_module import RLModule
from tunerl.core.sample_batch import SampleBatch

logger = logging.getLogger(__name__)


def scheduled_value(schedule: float | list, step: int) -> float:
    """A constant, or RLlib's piecewise-linear `[[timestep, value], ...]` at `step` (the last
    value holds after the last timestep)."""
    if isinstance(schedule, int | float):
        return float(schedule)
    steps = [float(s) for s, _ in schedule]
    values = [float(v) for _, v in schedule]
    return float(np.interp(step, steps, values))


def pick_device(num_gpus: float) -> torch.device:
    """The GPU when one is asked for and present, else the CPU (same code either way)."""
    if num_gpus > 0:
        if torch.cuda.is_available():
            return torch.device("cuda")
        logger.warning(
            "num_gpus_per_learner=%s but no CUDA device is present; using the CPU.", num_gpus
        )
    return torch.device("cpu")


class Learner:
    """Trains one module. `update()` runs `num_epochs` passes of shuffled minibatch SGD with
    global-norm gradient clipping and returns the mean of the loss statistics."""

    # Columns moved to torch for the loss; others (eps_id, t, new_obs) stay behind.
    LOSS_COLUMNS: tuple[str, ...] = ()

    def __init__(self, config: Any, module: RLModule, seed: int):
        self.config = config
        self.device = pick_device(config.num_gpus_per_learner)
        self.module = module.to(self.device)
        self.optimizer = self.build_optimizer()
        self.rng = np.random.default_rng(seed)

    def build_optimizer(self) -> Adam | torch.optim.Optimizer:
        lr = scheduled_value(self.config.lr, 0)
        return Adam(self.module.parameters(), lr=lr)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The loss to minimize on one minibatch, and statistics to report (floats or 0-d
        tensors)."""
        raise NotImplementedError(f"{type(self).__name__} must define compute_loss().")

    def set_lr(self, num_env_steps_sampled_lifetime: int) -> float:
        lr = scheduled_value(self.config.lr, num_env_steps_sampled_lifetime)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def to_tensors(self, batch: SampleBatch) -> dict[str, torch.Tensor]:
        columns = self.LOSS_COLUMNS or tuple(batch)
        return {
            key: torch.as_tensor(batch[key], device=self.device) for key in columns if key in batch
        }

    def update(self, batch: SampleBatch, num_env_steps_sampled_lifetime: int = 0) -> dict:
        """`num_epochs` passes of minibatch SGD over `batch`."""
        self.module.train()
        lr = self.set_lr(num_env_steps_sampled_lifetime)
        tensors = self.to_tensors(batch)
        num_rows = len(batch)
        minibatch_size = min(self.config.minibatch_size, num_rows)
        clip = self.config.grad_clip if self.config.grad_clip is not None else float("inf")
        parameters = [p for p in self.module.parameters() if p.requires_grad]
        totals: dict[str, float] = defaultdict(float)
        num_steps = 0
        # Rows beyond a multiple of minibatch_size are spread over the minibatches rather
        # than left as a tiny last one (whose advantage statistics would be noise).
        num_minibatches = max(1, num_rows // minibatch_size)
        for _ in range(self.config.num_epochs):
            order = torch.from_numpy(self.rng.permutation(num_rows)).to(self.device)
            for index in torch.tensor_split(order, num_minibatches):
                minibatch = {key: value[index] for key, value in tensors.items()}
                loss, stats = self.compute_loss(minibatch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = clip_grad_norm_(self.optimizer, parameters, clip)
                self.optimizer.step()
                for key, value in stats.items():
                    totals[key] += float(value)
                totals[m.GRAD_NORM] += float(grad_norm)
                num_steps += 1
        self.module.eval()
        results = {key: value / max(num_steps, 1) for key, value in totals.items()}
        results[m.CURR_LR] = lr
        return results

    # ------------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """Tensors (module, optimizer) and JSON-able state (RNG, algorithm extras)."""
        return {
            "module": self.module.get_state(),
            "optimizer": self.optimizer.state_dict(),
            "json": {"rng": self.rng.bit_generator.state, **self.get_extra_state()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.module.set_state(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        extra = dict(state["json"])
        self.rng.bit_generator.state = extra.pop("rng")
        self.set_extra_state(extra)

    def get_extra_state(self) -> dict[str, Any]:
        """JSON-able state of the algorithm's own (e.g. PPO's KL coefficient)."""
        return {}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        del state
