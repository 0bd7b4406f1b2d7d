"""An algorithm checkpoint read and written: the run's state (`algorithm_state.json`,
`rng_state.pt`) and the learner's part, every module in its own folder
(`rl_module/<module_id>/`, each loadable alone by `RLModule.from_checkpoint`), the optimizer
states and the learner's own tensors (`learner_state.pt`), its RNG and JSON state
(`learner_state.json`); the layout is `tunerl.core.checkpoint_layout`'s."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from tunerl.core import checkpoint_fields as fields
from tunerl.core import checkpoint_io
from tunerl.core.checkpoint_io import CheckpointError
from tunerl.core.checkpoint_layout import (
    LEARNER_DIR,
    LEARNER_JSON_FILE,
    LEARNER_TENSORS_FILE,
    RNG_FILE,
    STATE_FILE,
    module_dir,
    module_ids,
)
from tunerl.core.learner import Learner
from tunerl.core.rl_module import MODULE_STATE_FILE


def read_run_state(
    reader: checkpoint_io.CheckpointReader, live_counters: list[str], bit_generator: type
) -> dict[str, Any]:
    """algorithm_state.json and rng_state.pt, checked: the counters (every one of
    `live_counters`, integers), iteration, the algorithm's RNG state (of `bit_generator`),
    the smoothing window's episodes, the last evaluation, the algorithm's own `extra` state,
    and torch's RNG. Changes nothing."""
    state = fields.json_object(reader, STATE_FILE)
    where = str(reader.path(STATE_FILE))
    counters = fields.field(state, "counters", dict, where)
    for key, value in counters.items():
        fields.check(fields.is_int(value), where, f"counters.{key}", value, "an integer")
    missing = sorted(set(live_counters) - set(counters))
    fields.check(
        not missing, where, "counters", sorted(counters), f"all of {sorted(live_counters)}"
    )
    iteration = fields.field(state, "iteration", int, where)
    fields.check(iteration >= 0, where, "iteration", iteration, "a count >= 0")
    rng = fields.field(state, "rng", dict, where)
    try:
        bit_generator().state = rng
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{where}: rng is not a generator state ({error}).") from None
    episodes = {}
    for name in ("episode_returns", "episode_lengths"):
        episodes[name] = fields.field(state, name, list, where)
        bad = [value for value in episodes[name] if not fields.is_number(value)]
        fields.check(not bad, where, name, bad[:3], "a list of numbers")
    last_evaluation = state.get("last_evaluation")
    ok = last_evaluation is None or isinstance(last_evaluation, dict)
    fields.check(ok, where, "last_evaluation", last_evaluation, "an object or null")
    extra = fields.field(state, "extra", dict, where)

    rng_file = reader.tensors(RNG_FILE)
    torch_rng = rng_file.get("torch") if isinstance(rng_file, dict) else None
    try:
        torch.Generator().set_state(torch_rng)
    except (TypeError, RuntimeError) as error:
        raise CheckpointError(
            f"{reader.path(RNG_FILE)}: 'torch' is not a torch RNG state ({error})."
        ) from None
    return {
        "torch_rng": torch_rng,
        "counters": counters,
        "iteration": iteration,
        "rng": rng,
        **episodes,
        "last_evaluation": last_evaluation,
        "extra": extra,
    }


def write_learner_state(directory: Path, learner: Learner) -> None:
    """Writes every module's folder and the learner's files into a checkpoint folder."""
    state = learner.get_state()
    for module_id, module in learner.module.items():
        module.write_to(directory / module_dir(module_id))
    checkpoint_io.save_tensors(
        directory / LEARNER_DIR / LEARNER_TENSORS_FILE,
        {"optimizers": state["optimizers"], "tensors": state["tensors"]},
    )
    checkpoint_io.write_json(directory / LEARNER_DIR / LEARNER_JSON_FILE, state["json"])


def read_learner_state(reader: checkpoint_io.CheckpointReader, learner: Learner) -> dict[str, Any]:
    """The learner's part of a checkpoint (every module's weights, the optimizers, the
    learner's own tensors and JSON state), read and checked by loading it into a copy of
    `learner` first: whatever it refuses is a CheckpointError naming the file, and changes
    nothing live. Returns what `learner.set_state` takes."""
    live_ids = learner.module.keys()
    saved_ids = module_ids(reader)
    if sorted(saved_ids) != sorted(live_ids):
        raise CheckpointError(
            f"{reader.path(module_dir('').as_posix())} holds the modules {saved_ids}; this "
            f"algorithm trains {sorted(live_ids)}."
        )
    module_files = {
        module_id: (module_dir(module_id) / MODULE_STATE_FILE).as_posix() for module_id in live_ids
    }
    module_state = {module_id: reader.tensors(name) for module_id, name in module_files.items()}
    tensors_file = (LEARNER_DIR / LEARNER_TENSORS_FILE).as_posix()
    json_file = (LEARNER_DIR / LEARNER_JSON_FILE).as_posix()
    learner_tensors = reader.tensors(tensors_file)
    optimizers = saved_optimizers(learner, learner_tensors, reader.path(tensors_file))
    extra_tensors = learner_tensors.get("tensors", {})
    fields.check(
        isinstance(extra_tensors, dict),
        reader.path(tensors_file),
        "tensors",
        type(extra_tensors).__name__,
        "a dict",
    )
    learner_json = fields.json_object(reader, json_file)
    fields.field(learner_json, "rng", dict, str(reader.path(json_file)))
    learner_state = {
        "module": module_state,
        "optimizers": optimizers,
        "tensors": extra_tensors,
        "json": learner_json,
    }
    # Loaded into a copy of the learner first: whatever it refuses changes nothing live.
    probe = copy.deepcopy(learner)
    # The tensors are tried with the probe's own JSON state first, so an error in
    # learner_state.json is reported as that file's.
    tensors_only = {**learner_state, "json": probe.get_state()["json"]}
    steps = [
        (name, f"module {module_id!r}", module_id, None) for module_id, name in module_files.items()
    ] + [
        (tensors_file, "optimizer state", None, tensors_only),
        (json_file, "learner state", None, learner_state),
    ]
    for file, part, module_id, state in steps:
        try:
            if module_id is not None:
                probe.module[module_id].set_state(module_state[module_id])
            else:
                probe.set_state(state)
        except CheckpointError as error:
            raise CheckpointError(f"{reader.path(file)}: {error}") from None
        except Exception as error:  # noqa: BLE001 - any refusal of the copy is a bad file
            raise CheckpointError(
                f"{reader.path(file)}: the {part} does not fit this algorithm's "
                f"({type(error).__name__}: {fields.first_line(error)})."
            ) from None
    return learner_state


def saved_optimizers(learner: Learner, tensors: Any, where: Path) -> dict[str, dict[str, Any]]:
    """`{module_id: {name: state}}` from learner_state.pt, checked against the live
    optimizers (tunerl's own have a fixed state layout: every key and tensor shape must
    match; torch.optim ones fill their state only once stepped). A checkpoint of tunerl
    0.1 (one module, `{"optimizer": state}`) is read as that module's optimizers."""
    live = {
        module_id: learner.get_optimizers_for_module(module_id)
        for module_id in learner.module.keys()
    }
    if isinstance(tensors, dict) and "optimizers" not in tensors and "optimizer" in tensors:
        tensors = {"optimizers": legacy_optimizers(tensors["optimizer"], live, where)}
    if not (isinstance(tensors, dict) and "optimizers" in tensors):
        raise CheckpointError(f"{where}: field 'optimizers' is missing.")
    saved = tensors["optimizers"]
    ok = isinstance(saved, dict) and sorted(saved) == sorted(live)
    fields.check(ok, where, "optimizers", keys_of(saved), f"keyed by {sorted(live)}")
    for module_id, optimizers in live.items():
        names = saved[module_id]
        ok = isinstance(names, dict) and sorted(names) == sorted(optimizers)
        wanted = f"keyed by the optimizer names {sorted(optimizers)}"
        fields.check(ok, where, f"optimizers.{module_id}", keys_of(names), wanted)
        for name, optimizer in optimizers.items():
            if not isinstance(optimizer, torch.optim.Optimizer):
                fields.check_like(
                    saved[module_id][name],
                    optimizer.state_dict(),
                    where,
                    f"optimizers.{module_id}.{name}",
                )
    return saved


def legacy_optimizers(old: Any, live: dict[str, dict[str, Any]], where: Path) -> dict:
    """tunerl 0.1's learner file held one module's optimizer state: one state, or SAC's
    `{"actor": ..., "critic": ..., "alpha": ...}`. As `{module_id: {name: state}}`."""
    if len(live) != 1:
        raise CheckpointError(f"{where}: field 'optimizers' is missing.")
    ((module_id, optimizers),) = live.items()
    if len(optimizers) == 1:
        return {module_id: {next(iter(optimizers)): old}}
    return {module_id: old}


def keys_of(value: Any) -> Any:
    """What an error says a saved object is: its keys (never its tensors), or its type."""
    return sorted(value, key=str) if isinstance(value, dict) else type(value).__name__
