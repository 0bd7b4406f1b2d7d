"""Helpers of the sweep tests: tiny search spaces and a reader of TensorBoard event files
(tensorboardX writes them; TensorBoard itself is not installed)."""

from __future__ import annotations

import copy
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunerl.tuning import SearchSpace, search_space_from_dict

# Every trial: a few hundred env steps per iteration on a 16-unit network.
TINY_CONFIG = {
    "num_envs_per_env_runner": 4,
    "train_batch_size_per_learner": 256,
    "minibatch_size": 128,
    "num_epochs": 2,
    "model_config": {"fcnet_hiddens": [16]},
}
TINY_ITERATIONS = 3
# The shared grid sweep (conftest.grid_sweep).
GRID_LRS = [3e-3, 1e-4]
GRID_SEED = 0
RETURN_KEY = "env_runners/episode_return_mean"
STEPS_KEY = "num_env_steps_sampled_lifetime"
CURR_LR_KEY = "learners/default_policy/curr_lr"
RETURN_TAG = "ray/tune/" + RETURN_KEY


def tiny_space(space: dict[str, Any], **top: Any) -> SearchSpace:
    """A checked PPO/CartPole search space over `space`, with the tiny config and a stop at
    `TINY_ITERATIONS` unless `top` ("config", "stop", ...) says otherwise."""
    data = {
        "algo": "PPO",
        "env": "CartPole-v1",
        "config": copy.deepcopy(TINY_CONFIG),
        "stop": {"training_iteration": TINY_ITERATIONS},
        "space": space,
        **top,
    }
    return search_space_from_dict(data)


def event_files(trial_dir: str | Path) -> list[Path]:
    """The TensorBoard event files in a trial's folder."""
    return sorted(Path(trial_dir).rglob("events.out.tfevents.*"))


def _read_records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file: length (8 bytes), its CRC (4), data, data CRC (4)."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        offset += 12
        yield data[offset : offset + length]
        offset += length + 4


def read_events(path: Path) -> dict[str, Any]:
    """An event file as {"scalars": {tag: [(step, value)]}, "hparams": {name: value},
    "metrics": [tag], "session_end": status or None}."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    out: dict[str, Any] = {"scalars": {}, "hparams": {}, "metrics": [], "session_end": None}
    for record in _read_records(path):
        event = event_pb2.Event()
        event.ParseFromString(record)
        for value in event.summary.value:
            plugin = value.metadata.plugin_data
            if plugin.plugin_name != "hparams":
                out["scalars"].setdefault(value.tag, []).append((event.step, value.simple_value))
                continue
            data = HParamsPluginData()
            data.ParseFromString(plugin.content)
            if data.HasField("session_start_info"):
                for name, hparam in data.session_start_info.hparams.items():
                    out["hparams"][name] = getattr(hparam, hparam.WhichOneof("kind"))
            elif data.HasField("experiment"):
                out["metrics"] = [info.name.tag for info in data.experiment.metric_infos]
            elif data.HasField("session_end_info"):
                out["session_end"] = data.session_end_info.status
    return out
