"""Learner: the modules being trained (a MultiRLModule), their optimizers, and the updates.

One skeleton for every algorithm, in the seeds' three pieces:

- the loss: `compute_loss_for_module(module_id, batch) -> LossOutput(loss, stats, td_errors)`;
- the postprocessing: `postprocess_batch(module_id, batch)` (e.g. GAE or V-trace advantages),
  run once per update before any gradient step;
- the optimizers: `configure_optimizers_for_module(module_id)`, which registers named
  optimizers (`register_optimizer`; SAC has "actor", "critic" and "alpha").

`update(MultiAgentBatch)` updates every module in the batch that is trained and returns
`{module_id: stats}`. While a module's optimizers are set up and while it is updated,
`self.config` is that module's config: the algorithm's, with the module's PolicySpec
overrides (`PolicySpec(config={"lr": 1e-4})`), so a loss reads `self.config.lr` whichever
module it trains. `update_module` runs one gradient step on the whole batch; minibatch
SGD algorithms (PPO, IMPALA, APPO, VPG) call the shared `minibatch_sgd` from it instead. A
custom loss is one overridden method.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from tunerl.core import metrics as m
from tunerl.core import multi_agent
from tunerl.core.optim import Adam, clip_grad_norm_
from tunerl.core.rl_module.multi_rl_module import MultiRLModule
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch

logger = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = "default"


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


@dataclasses.dataclass
class LossOutput:
    """What a loss returns: the tensor to minimize, statistics to report (floats or 0-d
    tensors), and for replay algorithms the per-row TD errors that become priorities."""

    loss: torch.Tensor
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    td_errors: torch.Tensor | None = None


def optimizer_parameters(optimizer: Any) -> list[torch.nn.Parameter]:
    """The parameters an optimizer steps (tunerl's Adam or a torch.optim one)."""
    if isinstance(optimizer, Adam):
        return optimizer.params
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


class Learner:
    """Trains the modules of a MultiRLModule; see the module docstring for what a subclass
    defines. `self.module[module_id]` is one RLModule; `self.rng` is the learner's own
    (checkpointed) random stream."""

    # Columns moved to torch for the loss; others (eps_id, t, new_obs) stay behind. Empty:
    # every column.
    LOSS_COLUMNS: tuple[str, ...] = ()

    def __init__(self, config: Any, module: MultiRLModule, seed: int):
        self.config = config
        self._algorithm_config = config
        self._module_configs = {
            mid: multi_agent.module_config(config, mid) for mid in module.keys()
        }
        self.device = pick_device(config.num_gpus_per_learner)
        self.module = module.to(self.device)
        self.module.eval()
        self.rng = np.random.default_rng(seed)
        self._optimizers: dict[str, dict[str, Any]] = {}
        self._lr_schedules: dict[tuple[str, str], float | list] = {}
        self._submodules: dict[str, list[torch.nn.Module]] = {}
        for module_id in self.module.keys():
            self._optimizers[module_id] = {}
            with self.module_scope(module_id):
                self.configure_optimizers_for_module(module_id)

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers_for_module(self, module_id: str) -> None:
        """Registers the module's optimizers: by default one Adam over all its trainable
        parameters, at `config.lr` (a number or a schedule)."""
        lr = self.config.lr
        optimizer = Adam(self.module[module_id].parameters(), lr=scheduled_value(lr, 0))
        self.register_optimizer(module_id, DEFAULT_OPTIMIZER, optimizer, lr)

    def register_optimizer(
        self,
        module_id: str,
        name: str,
        optimizer: Any,
        lr_or_lr_schedule: float | list | None = None,
    ) -> None:
        """Adds a named optimizer of `module_id`. With `lr_or_lr_schedule` its learning
        rate follows that schedule of the learner's clock (`update(timestep=...)`)."""
        if name in self._optimizers.setdefault(module_id, {}):
            raise ValueError(f"Module {module_id!r} already has an optimizer named {name!r}.")
        self._optimizers[module_id][name] = optimizer
        if lr_or_lr_schedule is not None:
            self._lr_schedules[(module_id, name)] = lr_or_lr_schedule

    def get_optimizer(self, module_id: str, name: str = DEFAULT_OPTIMIZER) -> Any:
        return self._optimizers[module_id][name]

    def get_optimizers_for_module(self, module_id: str) -> dict[str, Any]:
        """`{name: optimizer}` of one module, in the order they were registered."""
        return dict(self._optimizers[module_id])

    def set_lr(self, timestep: int) -> dict[tuple[str, str], float]:
        """Sets every scheduled optimizer's learning rate for `timestep`; returns them."""
        rates = {}
        for (module_id, name), schedule in self._lr_schedules.items():
            lr = scheduled_value(schedule, timestep)
            for group in self._optimizers[module_id][name].param_groups:
                group["lr"] = lr
            rates[(module_id, name)] = lr
        return rates

    # ------------------------------------------------------------------ the three pieces
    def compute_loss_for_module(self, module_id: str, batch: dict[str, torch.Tensor]) -> LossOutput:
        """The loss of one module on one (mini)batch of tensors."""
        raise NotImplementedError(f"{type(self).__name__} must define compute_loss_for_module().")

    def postprocess_batch(self, module_id: str, batch: SampleBatch) -> SampleBatch:
        """Adds what the loss needs and the runners did not write (advantages, value
        targets), once per update; by default nothing."""
        del module_id
        return batch

    # ------------------------------------------------------------------ updating
    def should_train(self, module_id: str, batch: MultiAgentBatch | None = None) -> bool:
        """Whether `update` trains this module: one of the learner's, and allowed by
        `policies_to_train` (all modules by default; a function gets the batch)."""
        return module_id in self.module and multi_agent.is_trained(self.config, module_id, batch)

    def update(
        self, batch: MultiAgentBatch | SampleBatch, timestep: int = 0
    ) -> dict[str, dict[str, Any]]:
        """Updates every trained module that has rows in `batch` (a SampleBatch is the
        batch of `default_policy`); `timestep` is the clock the learning-rate schedules
        read. Returns `{module_id: stats}`."""
        batch = MultiAgentBatch.wrap_as_needed(batch)
        rates = self.set_lr(timestep)
        results: dict[str, dict[str, Any]] = {}
        for module_id, module_batch in batch.policy_batches.items():
            if not self.should_train(module_id, batch) or len(module_batch) == 0:
                continue
            self._set_training(module_id, True)
            try:
                with self.module_scope(module_id):
                    stats = self.update_module(module_id, module_batch)
            finally:
                self._set_training(module_id, False)
            lr = rates.get((module_id, DEFAULT_OPTIMIZER))
            if lr is not None:
                stats[m.CURR_LR] = lr
            results[module_id] = stats
        return results

    @contextlib.contextmanager
    def module_scope(self, module_id: str) -> Iterator[None]:
        """`self.config` is `module_id`'s config inside (see the module docstring)."""
        self.config = self._module_configs.get(module_id, self._algorithm_config)
        try:
            yield
        finally:
            self.config = self._algorithm_config

    def _set_training(self, module_id: str, mode: bool) -> None:
        """`module.train(mode)` without its recursion: the flag of every submodule, from a
        list made once (SAC's 12 submodules took 40 us per update to toggle with train())."""
        submodules = self._submodules.get(module_id)
        if submodules is None:
            submodules = self._submodules[module_id] = list(self.module[module_id].modules())
        for submodule in submodules:
            # A plain attribute: set it past nn.Module.__setattr__, which costs 3 us a call.
            submodule.__dict__["training"] = mode

    def update_module(self, module_id: str, batch: SampleBatch) -> dict[str, Any]:
        """One update of one module: postprocessing, then one gradient step on the whole
        batch. Minibatch SGD learners return `minibatch_sgd(self, module_id, batch)`."""
        batch = self.postprocess_batch(module_id, batch)
        return self.gradient_step(module_id, self.to_tensors(batch))

    def gradient_step(self, module_id: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        """`compute_loss_for_module` then `apply_gradients`; the statistics as floats, and
        the TD errors (a numpy array under `metrics.TD_ERRORS`) if the loss gave them."""
        out = self.compute_loss_for_module(module_id, tensors)
        norms = self.apply_gradients(module_id, out.loss)
        stats = {key: _as_float(value) for key, value in out.stats.items()}
        if DEFAULT_OPTIMIZER in norms:
            stats[m.GRAD_NORM] = norms[DEFAULT_OPTIMIZER]
        if out.td_errors is not None:
            stats[m.TD_ERRORS] = out.td_errors.detach().cpu().numpy()
        return stats

    def apply_gradients(
        self, module_id: str, loss: torch.Tensor, optimizer_names: Iterable[str] | None = None
    ) -> dict[str, float]:
        """Backpropagates `loss` and steps the named optimizers of `module_id` (default: all
        of them), each with its gradients clipped to a global norm of `config.grad_clip`.
        Returns `{optimizer name: gradient norm before clipping}` (the default optimizer's
        always, the others' when clipping)."""
        names = list(self._optimizers[module_id] if optimizer_names is None else optimizer_names)
        optimizers = [self._optimizers[module_id][name] for name in names]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.grad_clip
        norms = {}
        for name, optimizer in zip(names, optimizers):
            # The norm is reported for the default optimizer; the others' (SAC's three) cost
            # an op each per update, so they are computed only to clip.
            if clip is not None or name == DEFAULT_OPTIMIZER:
                params = optimizer_parameters(optimizer)
                limit = float("inf") if clip is None else clip
                norms[name] = float(clip_grad_norm_(optimizer, params, limit))
            optimizer.step()
        return norms

    def to_tensors(self, batch: SampleBatch) -> dict[str, torch.Tensor]:
        """The loss columns as tensors on the learner's device (every numeric column when
        LOSS_COLUMNS is empty; `agent_id`, a column of names, stays behind)."""
        columns = self.LOSS_COLUMNS or [k for k in batch if batch[k].dtype.kind in "biuf"]
        return {
            key: torch.as_tensor(batch[key], device=self.device) for key in columns if key in batch
        }

    def update_observation_filters(self, batch: MultiAgentBatch | SampleBatch) -> None:
        """Merges each module's sampled observations into its observation filter (a no-op
        without one). Called after learning on the batch, so it was trained with the
        statistics it was sampled with."""
        batch = MultiAgentBatch.wrap_as_needed(batch)
        for module_id, module_batch in batch.policy_batches.items():
            if module_id in self.module and len(module_batch):
                self.module[module_id].update_observation_filter(module_batch[SampleBatch.OBS])

    # ------------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """Tensors (`module`: {module_id: weights}, `optimizers`: {module_id: {name:
        state}}, `tensors`: the algorithm's own, e.g. APPO's target networks) and JSON-able
        state (`json`: the RNG and the algorithm's extras)."""
        return {
            "module": self.module.get_state(),
            "optimizers": {
                module_id: {name: opt.state_dict() for name, opt in optimizers.items()}
                for module_id, optimizers in self._optimizers.items()
            },
            "tensors": self.get_extra_tensors(),
            "json": {"rng": self.rng.bit_generator.state, **self.get_extra_state()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.module.set_state(state["module"])
        for module_id, optimizers in state["optimizers"].items():
            live = self._optimizers[module_id]
            missing = sorted(set(live) - set(optimizers))
            if missing or set(optimizers) - set(live):
                raise ValueError(
                    f"optimizers of module {module_id!r} are {sorted(optimizers)}; this "
                    f"learner has {sorted(live)}."
                )
            for name, optimizer_state in optimizers.items():
                live[name].load_state_dict(optimizer_state)
        self.set_extra_tensors(state.get("tensors", {}))
        extra = dict(state["json"])
        self.rng.bit_generator.state = extra.pop("rng")
        self.set_extra_state(extra)

    def get_extra_state(self) -> dict[str, Any]:
        """JSON-able state of the algorithm's own (e.g. PPO's KL coefficient)."""
        return {}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        del state

    def get_extra_tensors(self) -> dict[str, Any]:
        """Tensors of the algorithm's own (e.g. APPO's target networks), saved in the
        learner's state file."""
        return {}

    def set_extra_tensors(self, tensors: dict[str, Any]) -> None:
        """Loads what `get_extra_tensors` returned; raises on anything that does not fit."""
        if tensors:
            raise ValueError(f"unexpected learner tensors {sorted(tensors)}")


def _as_float(value: Any) -> float:
    # A loss may return its statistics as live tensors: read them without their graph.
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def minibatch_sgd(learner: Learner, module_id: str, batch: SampleBatch) -> dict[str, float]:
    """`config.num_epochs` passes of shuffled minibatch SGD over `batch` (PPO, IMPALA, APPO,
    VPG), minibatches of `config.minibatch_size` rows; the mean of each statistic."""
    config = learner.config
    tensors = learner.to_tensors(batch)
    num_rows = len(batch)
    minibatch_size = min(config.minibatch_size, num_rows)
    # Rows beyond a multiple of minibatch_size are spread over the minibatches rather than
    # left as a tiny last one (whose advantage statistics would be noise).
    num_minibatches = max(1, num_rows // minibatch_size)
    totals: dict[str, float] = defaultdict(float)
    num_steps = 0
    for _ in range(config.num_epochs):
        order = torch.from_numpy(learner.rng.permutation(num_rows)).to(learner.device)
        for index in torch.tensor_split(order, num_minibatches):
            minibatch = {key: value[index] for key, value in tensors.items()}
            for key, value in learner.gradient_step(module_id, minibatch).items():
                totals[key] += float(value)
            num_steps += 1
    return {key: value / max(num_steps, 1) for key, value in totals.items()}
