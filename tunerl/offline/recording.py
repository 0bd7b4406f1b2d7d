"""Datasets recorded locally, for the offline experiments (`experiments/*.yaml` with a
`dataset` key): an expert trained by one of the online experiments, then rows sampled by it
and by an untrained policy of the same algorithm (near-uniform actions), written with
`offline_data(output=...)`. No download: every dataset is made on this machine."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from tunerl.core import metrics as m

logger = logging.getLogger(__name__)

# Written last into a recorded folder: a folder without it is recorded again.
COMPLETE_FILE = "dataset.json"


def record_dataset(
    expert: str | os.PathLike,
    directory: str | os.PathLike,
    num_rows: int,
    random_fraction: float = 0.0,
    seed: int = 0,
) -> Path:
    """Records `num_rows` rows into `directory` (kept if already recorded with the same
    settings): a share `random_fraction` by an untrained policy, the rest by the policy the
    experiment file `expert` trains to its stop criteria. Returns the folder."""
    from tunerl.experiments import load_experiment, train_until

    directory = Path(directory)
    spec = {
        "expert": str(Path(expert).name),
        "rows": num_rows,
        "random_fraction": random_fraction,
        "seed": seed,
    }
    marker = directory / COMPLETE_FILE
    if marker.is_file() and json.loads(marker.read_text()).get("spec") == spec:
        return directory
    experiment = load_experiment(expert)
    config = experiment.algo_config(seed=seed)
    num_random = int(round(num_rows * random_fraction))
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = Path(scratch) / "expert"
        run = train_until(config, experiment.stop, checkpoint_path=checkpoint)
        logger.info("Expert %s: %s", expert, run.result[m.ENV_RUNNER_RESULTS])
        parts = [("expert", num_rows - num_random, checkpoint), ("random", num_random, None)]
        returns = {}
        for name, rows, weights in parts:
            if rows:
                returns[name] = _record(config, directory / name, rows, weights)
    marker.write_text(json.dumps({"spec": spec, "episode_return_mean": returns}))
    return directory


def _record(config: Any, directory: Path, num_rows: int, checkpoint: Path | None) -> float:
    """`num_rows` rows sampled by `config`'s algorithm (restored from `checkpoint`, else
    untrained); returns the mean return of the episodes it finished."""
    recorder_config = (
        config.copy().offline_data(output=str(directory)).env_runners(num_env_runners=0)
    )
    recorder = recorder_config.build_algo()
    try:
        if checkpoint is not None:
            recorder.restore_from_path(checkpoint)
        episodes = m.EpisodeStats(window=10_000)
        sampled = 0
        while sampled < num_rows:
            batch = recorder.env_runner_group.local_env_runner.sample(
                num_timesteps=min(1000, num_rows - sampled)
            )
            sampled += len(batch)
            metrics = recorder.env_runner_group.local_env_runner.get_metrics()
            episodes.extend(metrics["episode_returns"], metrics["episode_lengths"])
        return float(episodes.reduce()[m.EPISODE_RETURN_MEAN])
    finally:
        recorder.stop()
