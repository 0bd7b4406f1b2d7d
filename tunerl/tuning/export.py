"""A trial's checkpoint out of its sweep: `export_best` copies the best one's modules into a
deployable folder, `evaluate_checkpoint` runs episodes with a module of a checkpoint or of
such a folder. Both read checkpoints through `core/checkpoint_layout.py` and
`CheckpointReader`: every file checked against its manifest, every class resolved under
`resolve_class` (nothing imported unless allowed, nothing named in a file called).

    out_dir/
        rl_module/<module_id>/     one folder per module, as in the checkpoint
        config.json                algorithm class and config
        scores.json                how the trial was chosen, and the whole ranking
        MANIFEST.json
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from ray import tune

from tunerl.core import checkpoint_fields, checkpoint_io, checkpoint_layout, class_resolution
from tunerl.core import metrics as m
from tunerl.core.columns import DEFAULT_MODULE_ID
from tunerl.core.config import ConfigError
from tunerl.core.rl_module import MODULE_SPEC_FILE, MultiRLModuleSpec, RLModule, check_module_id
from tunerl.tuning.files import closest
from tunerl.tuning.ranking import rank_trials

# What export_checkpoint writes: a folder per module under rl_module/, and JSON beside it.
EXPORT_MODULES_DIR = PurePosixPath("rl_module")
EXPORT_CONFIG_FILE = "config.json"
EXPORT_SCORES_FILE = "scores.json"
# The one module folder of exports written before checkpoints held several modules; it is
# still evaluated, as module `default_policy`.
OLD_EXPORT_MODULE_DIR = "module"


@dataclass
class _SavedAlgorithm:
    """What evaluation reads from a checkpoint or an export: the algorithm class and config
    as JSON, the file they came from, and each module's folder (relative to the folder)."""

    state: dict[str, Any]
    where: str
    module_dirs: dict[str, PurePosixPath]


def _folders_under(reader: checkpoint_io.CheckpointReader, parent: PurePosixPath) -> list[str]:
    prefix = f"{parent}/"
    return sorted(
        {name[len(prefix) :].split("/", 1)[0] for name in reader.files if name.startswith(prefix)}
    )


def _read_saved(reader: checkpoint_io.CheckpointReader) -> _SavedAlgorithm:
    """The parts of an algorithm checkpoint (`checkpoint_layout`), or of a folder written by
    `export_checkpoint`: `rl_module/<module_id>/`, or an older export's one `module/`."""
    if reader.has(MODULE_SPEC_FILE) and not reader.has(EXPORT_CONFIG_FILE):
        raise checkpoint_io.CheckpointError(
            f"{reader.directory} is a module folder: it holds the network, not the env and "
            "config to run it in. Evaluate the algorithm checkpoint it belongs to (the folder "
            "above learner_group/), or a folder written by export_best (tunerl best --export); "
            "RLModule.from_checkpoint() loads the module alone."
        )
    if not reader.has(EXPORT_CONFIG_FILE):
        ids = checkpoint_layout.module_ids(reader)
        module_dirs = {i: PurePosixPath(checkpoint_layout.module_dir(i)) for i in ids}
        where = str(reader.path(checkpoint_layout.STATE_FILE))
        return _SavedAlgorithm(checkpoint_layout.read_state(reader), where, module_dirs)
    ids = _folders_under(reader, EXPORT_MODULES_DIR)
    module_dirs = {i: EXPORT_MODULES_DIR / i for i in ids}
    if not ids and any(name.startswith(f"{OLD_EXPORT_MODULE_DIR}/") for name in reader.files):
        module_dirs = {DEFAULT_MODULE_ID: PurePosixPath(OLD_EXPORT_MODULE_DIR)}
    state = checkpoint_fields.json_object(reader, EXPORT_CONFIG_FILE)
    return _SavedAlgorithm(state, str(reader.path(EXPORT_CONFIG_FILE)), module_dirs)


def _module_dir(saved: _SavedAlgorithm, module_id: str, path: Path) -> PurePosixPath:
    if not saved.module_dirs:
        raise checkpoint_io.CheckpointError(f"{path} holds no module folder.")
    if module_id not in saved.module_dirs:
        ids = sorted(saved.module_dirs)
        raise ConfigError(
            f"{path} has no module {module_id!r}; it holds {ids}.{closest(module_id, ids)}"
        )
    return saved.module_dirs[module_id]


def evaluate_checkpoint(
    path: str | os.PathLike,
    episodes: int = 10,
    seed: int | None = None,
    explore: bool = False,
    env_config: dict | None = None,
    allow_import: Sequence[str] = (),
    module_id: str = DEFAULT_MODULE_ID,
) -> dict[str, Any]:
    """Runs `episodes` episodes with module `module_id` of a checkpoint (or of a folder
    written by `export_best`), without the learner; returns their returns and lengths with
    mean and std. On a multi-agent env every module of the checkpoint acts, mapped as the
    config maps agents (a dict mapping comes back from the checkpoint; a function does not),
    and the returns are summed over agents, with `module_episode_returns` beside them.
    `env_config` entries are added to the config's (e.g. {"render_mode":
    "human"}). Classes the checkpoint names load as in `Algorithm.from_checkpoint`
    (`allow_import`): nothing is imported unless allowed, nothing named in it is called."""
    from tunerl.core.algorithm import Algorithm
    from tunerl.core.config_json import config_from_json
    from tunerl.core.env_runner import EnvRunner
    from tunerl.env.multi_agent_env_runner import make_runner_class
    from tunerl.env.registry import resolve_env_creator

    if episodes < 1:
        raise ConfigError(f"episodes={episodes} must be at least 1.")
    with checkpoint_io.CheckpointReader(path) as reader:
        saved = _read_saved(reader)
        directory = reader.directory
        algo_class = class_resolution.resolve_class(
            saved.state.get("algo_class"), Algorithm, f"{saved.where}: algo_class", allow_import
        )
        config = config_from_json(algo_class, saved.state.get("config"), saved.where, allow_import)
    overrides = {**config.evaluation_config, "explore": explore, "num_envs_per_env_runner": 1}
    if env_config:
        overrides["env_config"] = {**config.env_config, **env_config}
    config = config.with_overrides(overrides)
    runner_class = make_runner_class(config, resolve_env_creator(config.env))
    multi_agent = runner_class is not EnvRunner
    if multi_agent:
        module_ids = sorted(saved.module_dirs)
    else:
        _module_dir(saved, module_id, directory)  # the module asked for exists
        module_ids = [module_id]
    # Each module folder has a manifest of its own, which its loader checks.
    modules = {
        mid: RLModule.from_checkpoint(directory / saved.module_dirs[mid], allow_import)
        for mid in module_ids
    }
    spec = MultiRLModuleSpec(rl_module_specs={mid: m.spec() for mid, m in modules.items()})
    runner = runner_class(config, spec, worker_index=0, seed=seed)
    runner.set_weights({mid: m.get_state() for mid, m in modules.items()})
    try:
        runner.sample(num_episodes=episodes, explore=explore)
        stats = runner.get_metrics()
    finally:
        runner.stop()
    returns = stats["episode_returns"]
    out = {
        "episode_returns": returns,
        "episode_lengths": stats["episode_lengths"],
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
    }
    if multi_agent:
        out["module_episode_returns"] = stats["module_episode_returns"]
    return out


def export_checkpoint(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, scores: dict | None = None
) -> Path:
    """Copies an algorithm checkpoint's modules out as a deployable folder: every module to
    `out_dir/rl_module/<module_id>/` (each loads with `RLModule.from_checkpoint`, all of them
    with `MultiRLModule.from_checkpoint(out_dir/"rl_module")`), `config.json` (algorithm class
    and config), and `scores.json` if `scores` are given, under a manifest of its own.
    Replaces an earlier export at `out_dir`, never another folder."""
    with checkpoint_io.CheckpointReader(checkpoint) as reader:
        state = checkpoint_layout.read_state(reader)
        module_ids = checkpoint_layout.module_ids(reader)
        if not module_ids:
            raise checkpoint_io.CheckpointError(f"{reader.directory} holds no module folder.")
        # Each module's files as the manifest checked them (never a second read of a folder).
        module_files = {}
        for module_id in module_ids:
            prefix = f"{checkpoint_layout.module_dir(module_id).as_posix()}/"
            target = EXPORT_MODULES_DIR / check_module_id(module_id)
            for name in reader.files:
                if name.startswith(prefix):
                    module_files[target / name.removeprefix(prefix)] = reader.bytes(name)
    with checkpoint_io.atomic_directory(out_dir) as directory:
        for name, data in module_files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)
        config = {"algo_class": state.get("algo_class"), "config": state.get("config")}
        checkpoint_io.write_json(directory / EXPORT_CONFIG_FILE, config)
        if scores is not None:
            checkpoint_io.write_json(directory / EXPORT_SCORES_FILE, scores)
        checkpoint_io.write_manifest(directory)
    return Path(os.path.abspath(out_dir))


def export_best(
    results: tune.ResultGrid | str | os.PathLike,
    out_dir: str | os.PathLike,
    metric: str = m.EPISODE_RETURN_MEAN_KEY,
    mode: str = "max",
    by: str = "last",
) -> Path:
    """Exports the best trial's best checkpoint (`export_checkpoint`), with `scores.json`
    saying how it was chosen and holding the whole ranking."""
    ranked = rank_trials(results, metric, mode, by)
    best = next((s for s in ranked if s.checkpoint), None)
    if best is None:
        raise ConfigError("No trial has a checkpoint to export.")
    scores = {
        "metric": metric,
        "mode": mode,
        "by": by,
        "best": {k: v for k, v in asdict(best).items() if k != "config"},
        "ranking": [{"trial_id": s.trial_id, "score": s.score} for s in ranked],
    }
    return export_checkpoint(best.checkpoint, out_dir, scores)
