"""MultiRLModule: the modules an algorithm trains, keyed by module id.

Single-agent training is a MultiRLModule with one module, `default_policy`; multi-agent
training, parameter sharing and self-play are more ids in the same dict. Weights, batches,
results and checkpoints carry the id: `{module_id: state}`, `MultiAgentBatch({module_id:
SampleBatch})`, `learners/<module_id>/...`, `rl_module/<module_id>/`.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tunerl.core import checkpoint_io
from tunerl.core.columns import DEFAULT_MODULE_ID
from tunerl.core.rl_module.rl_module import RLModule, RLModuleSpec


def check_module_id(module_id: Any) -> str:
    """`module_id` if it can name a module (a key of weights and results, and a checkpoint
    folder): a non-empty string without '/', '.' or a leading '_'. Raises ValueError."""
    if (
        not isinstance(module_id, str)
        or not module_id
        or "/" in module_id
        or "." in module_id
        or module_id.startswith("_")
        or module_id != module_id.strip()
    ):
        raise ValueError(
            f"Module id {module_id!r} is not allowed: a module id is a non-empty string "
            "without '/', '.', surrounding spaces or a leading '_' (it names a checkpoint "
            "folder and a result key), e.g. 'default_policy' or 'p0'."
        )
    return module_id


class MultiRLModule(nn.Module):
    """`{module_id: RLModule}`, itself a torch module (one `.to(device)`, one
    `parameters()`). Reads like a dict: `multi[module_id]`, `in`, `keys()`, `items()`."""

    def __init__(self, rl_modules: Mapping[str, RLModule] | None = None):
        super().__init__()
        self._rl_modules = nn.ModuleDict()
        for module_id, module in (rl_modules or {}).items():
            self.add_module(module_id, module)

    # ------------------------------------------------------------------ the dict
    def add_module(  # type: ignore[override]
        self, module_id: str, module: RLModule, *, override: bool = False
    ) -> None:
        """Adds (or with `override`, replaces) the module of `module_id`."""
        check_module_id(module_id)
        if not isinstance(module, RLModule):
            raise TypeError(
                f"MultiRLModule holds RLModules; {module_id!r} is a {type(module).__name__}."
            )
        if module_id in self._rl_modules and not override:
            raise ValueError(f"Module {module_id!r} exists; pass override=True to replace it.")
        self._rl_modules[module_id] = module

    def remove_module(self, module_id: str) -> RLModule:
        """Removes the module of `module_id` and returns it."""
        module = self[module_id]
        del self._rl_modules[module_id]
        return module

    def __getitem__(self, module_id: str) -> RLModule:
        if module_id not in self._rl_modules:
            raise KeyError(
                f"No module {module_id!r}; this MultiRLModule holds {sorted(self._rl_modules)}."
            )
        return self._rl_modules[module_id]  # type: ignore[return-value]

    def __contains__(self, module_id: object) -> bool:
        return module_id in self._rl_modules

    def __iter__(self) -> Iterator[str]:
        return iter(self._rl_modules)

    def __len__(self) -> int:
        return len(self._rl_modules)

    def keys(self) -> list[str]:
        return list(self._rl_modules)

    def values(self) -> list[RLModule]:
        return list(self._rl_modules.values())  # type: ignore[arg-type]

    def items(self) -> list[tuple[str, RLModule]]:
        return list(self._rl_modules.items())  # type: ignore[arg-type]

    def foreach_module(self, fn: Callable[[str, RLModule], Any]) -> dict[str, Any]:
        """`{module_id: fn(module_id, module)}`."""
        return {module_id: fn(module_id, module) for module_id, module in self.items()}

    # ------------------------------------------------------------------ forward passes
    def forward_inference(self, batch: Mapping[str, dict]) -> dict[str, dict]:
        return {mid: self[mid].forward_inference(b) for mid, b in batch.items()}

    def forward_exploration(self, batch: Mapping[str, dict]) -> dict[str, dict]:
        return {mid: self[mid].forward_exploration(b) for mid, b in batch.items()}

    def forward_train(self, batch: Mapping[str, dict]) -> dict[str, dict]:
        return {mid: self[mid].forward_train(b) for mid, b in batch.items()}

    def forward(self, batch: Mapping[str, dict]) -> dict[str, dict]:
        return self.forward_train(batch)

    # ------------------------------------------------------------------ state
    def get_state(
        self, module_ids: Sequence[str] | None = None
    ) -> dict[str, dict[str, torch.Tensor]]:
        """`{module_id: weights}` of `module_ids` (default: all), on the CPU."""
        ids = self.keys() if module_ids is None else list(module_ids)
        return {module_id: self[module_id].get_state() for module_id in ids}

    def set_state(self, state: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Loads `{module_id: weights}`; modules not in `state` keep theirs."""
        unknown = sorted(set(state) - set(self._rl_modules))
        if unknown:
            raise KeyError(
                f"Weights for modules {unknown}, which this MultiRLModule does not hold "
                f"(it holds {sorted(self._rl_modules)})."
            )
        for module_id, weights in state.items():
            self[module_id].set_state(weights)

    def spec(self) -> MultiRLModuleSpec:
        return MultiRLModuleSpec(
            multi_rl_module_class=type(self),
            rl_module_specs={module_id: module.spec() for module_id, module in self.items()},
        )

    # ------------------------------------------------------------------ files
    def save_to_path(self, path: str | os.PathLike) -> str:
        """Writes one folder per module (`path/<module_id>/`, each loadable alone by
        `RLModule.from_checkpoint`), atomically, under one manifest."""
        with checkpoint_io.atomic_directory(path) as directory:
            for module_id, module in self.items():
                module.write_to(directory / module_id)
            checkpoint_io.write_manifest(directory)
        return os.path.abspath(path)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, allow_import: Sequence[str] = ()
    ) -> MultiRLModule:
        """Loads every module folder under `path`: a folder written by `save_to_path`, or an
        algorithm checkpoint's `learner_group/learner/rl_module`. Classes resolve as in
        `RLModule.from_checkpoint` (nothing is imported unless allowed)."""
        root = os.fspath(path)
        module_ids = []
        with os.scandir(root) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    module_ids.append(entry.name)
                elif stat.S_ISLNK(info.st_mode):
                    raise checkpoint_io.CheckpointError(
                        f"{entry.path} is a symlink; a checkpoint holds real folders only."
                    )
        if not module_ids:
            raise checkpoint_io.CheckpointError(f"{root} holds no module folders.")
        modules = {}
        for module_id in sorted(module_ids):
            try:
                check_module_id(module_id)
            except ValueError as error:
                raise checkpoint_io.CheckpointError(f"{root}/{module_id}: {error}") from None
            modules[module_id] = RLModule.from_checkpoint(
                os.path.join(root, module_id), allow_import
            )
        return cls(modules)


@dataclasses.dataclass
class MultiRLModuleSpec:
    """How to build a MultiRLModule: `{module_id: RLModuleSpec}` (RLlib's
    `rl_module_specs`); one RLModuleSpec means one module, `default_policy`."""

    multi_rl_module_class: type[MultiRLModule] = MultiRLModule
    rl_module_specs: dict[str, RLModuleSpec] | RLModuleSpec | None = None

    @property
    def module_specs(self) -> dict[str, RLModuleSpec]:
        """`rl_module_specs` as a dict."""
        specs = self.rl_module_specs
        if specs is None:
            return {DEFAULT_MODULE_ID: RLModuleSpec()}
        if isinstance(specs, RLModuleSpec):
            return {DEFAULT_MODULE_ID: specs}
        return dict(specs)

    def build(self) -> MultiRLModule:
        return self.multi_rl_module_class(
            {module_id: spec.build() for module_id, spec in self.module_specs.items()}
        )
