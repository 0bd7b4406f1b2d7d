"""Where things are in an algorithm checkpoint: one home for the layout, used by the
algorithm that writes it and by everything that reads it (ranking, export, evaluation).

    algorithm_state.json            algorithm class, tunerl version, config, counters, RNG
    rng_state.pt                    torch's global RNG
    learner_group/learner/
        learner_state.pt            optimizer states, {module_id: {optimizer_name: state}}
        learner_state.json          the learner's RNG and its algorithm's own state
        rl_module/<module_id>/      one folder per module, each loadable alone by
                                    RLModule.from_checkpoint (module_state.pt, module_spec.json)
    MANIFEST.json                   every file with its size and hash (checkpoint_io)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunerl.core import checkpoint_io

STATE_FILE = "algorithm_state.json"
RNG_FILE = "rng_state.pt"
LEARNER_DIR = Path("learner_group") / "learner"
LEARNER_TENSORS_FILE = "learner_state.pt"
LEARNER_JSON_FILE = "learner_state.json"
MODULE_DIR = LEARNER_DIR / "rl_module"


def module_dir(module_id: str) -> Path:
    """The folder (relative to the checkpoint) of one module."""
    return MODULE_DIR / module_id


def module_ids(reader: checkpoint_io.CheckpointReader) -> list[str]:
    """The ids of the modules a checkpoint holds, sorted (every folder under rl_module/)."""
    prefix = MODULE_DIR.as_posix() + "/"
    ids = {name[len(prefix) :].split("/", 1)[0] for name in reader.files if name.startswith(prefix)}
    return sorted(ids)


def read_state(reader: checkpoint_io.CheckpointReader) -> dict[str, Any]:
    """algorithm_state.json, checked to be a JSON object."""
    state = reader.json(STATE_FILE)
    if not isinstance(state, dict):
        raise checkpoint_io.CheckpointError(
            f"{reader.path(STATE_FILE)} must hold a JSON object, not {type(state).__name__}."
        )
    return state
