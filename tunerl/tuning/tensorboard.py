"""TensorBoard for sweeps: every trial's learning curves and its hyperparameters, so
`tensorboard --logdir <experiment>` shows the trials side by side and, in the HParams tab,
the table and parallel-coordinates view of the search.

Ray Tune's own `TBXLoggerCallback` writes the curves but the HParams only when a trial ends
(nothing while a sweep runs, nothing for a sweep that was interrupted), and it leaves out
list-valued hyperparameters such as `model_config/fcnet_hiddens`. `TensorBoardCallback` is that
logger with the HParams written when the trial starts, every value shown (lists as text), the
same hyperparameter columns in every trial, and the current value of each hyperparameter
logged as a scalar, so PBT's mutations show as curves. Being a `TBXLoggerCallback`, it
replaces Tune's default one: one set of event files per trial.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TRAINING_ITERATION
from ray.tune.utils import flatten_dict

from tunerl.core import metrics as m
from tunerl.tuning.files import PATH_SEPARATOR, get_path

# Tune's logger writes result keys under this prefix; the HParams metrics must name the same
# tags for TensorBoard to find their values.
TAG_PREFIX = "ray/tune/"
CONFIG_TAG_PREFIX = f"{TAG_PREFIX}config/"
# The metrics the HParams table shows beside each trial's hyperparameters.
HPARAM_METRICS = (
    m.EPISODE_RETURN_MEAN_KEY,
    m.EVALUATION_RETURN_MEAN_KEY,
    f"{m.ENV_RUNNER_RESULTS}/{m.EPISODE_LEN_MEAN}",
    m.NUM_ENV_STEPS_SAMPLED_LIFETIME,
)
_HPARAM_TYPES = (bool, int, float, str)


def hparam_value(value: Any) -> bool | int | float | str:
    """A config value as TensorBoard's HParams can hold it: numbers, bools and strings as
    they are, anything else (None, lists, dicts) as its JSON text."""
    if isinstance(value, _HPARAM_TYPES):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return json.dumps(value, default=str)


class TensorBoardCallback(TBXLoggerCallback):
    """Tune's TensorBoard logger with HParams for every trial (see the module docstring).

    `hparam_names` are the config fields shown as hyperparameters ("lr",
    "model_config/fcnet_hiddens"); by default each trial's searched fields. `metrics` are the
    result keys the HParams table shows (default `HPARAM_METRICS`)."""

    def __init__(
        self,
        hparam_names: Iterable[str] | None = None,
        metrics: Iterable[str] = HPARAM_METRICS,
    ):
        super().__init__()
        self._hparam_names = list(hparam_names) if hparam_names is not None else None
        self._metrics = list(dict.fromkeys(metrics))

    def _names(self, trial) -> list[str]:
        if self._hparam_names is not None:
            return self._hparam_names
        return list(flatten_dict(trial.evaluated_params or {}, delimiter=PATH_SEPARATOR))

    def log_trial_start(self, trial) -> None:
        # A trial that PBT paused and resumed starts again: keep its writer, so the trial has
        # one event file and one HParams session.
        if trial in self._trial_writer:
            return
        super().log_trial_start(trial)
        from tensorboardX.summary import hparams

        values = {name: hparam_value(get_path(trial.config, name)) for name in self._names(trial)}
        experiment, session_start, _ = hparams(
            hparam_dict=values, metric_dict={TAG_PREFIX + key: 0.0 for key in self._metrics}
        )
        writer = self._trial_writer[trial]
        writer.file_writer.add_summary(experiment)
        writer.file_writer.add_summary(session_start)
        writer.flush()

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        super().log_trial_result(iteration, trial, result)
        config = result.get("config", {})
        writer = self._trial_writer[trial]
        for name in self._names(trial):
            value = get_path(config, name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(
                    CONFIG_TAG_PREFIX + name, value, global_step=result[TRAINING_ITERATION]
                )
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial not in self._trial_writer:
            return
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.summary import hparams

        _, _, session_end = hparams(hparam_dict={}, metric_dict={})
        status = Status.Value("STATUS_FAILURE" if failed else "STATUS_SUCCESS")
        _set_session_status(session_end, status)
        writer = self._trial_writer.pop(trial)
        writer.file_writer.add_summary(session_end)
        writer.close()
        self._trial_result.pop(trial, None)


def _set_session_status(summary, status: int) -> None:
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    value = summary.value[0]
    data = HParamsPluginData()
    data.ParseFromString(value.metadata.plugin_data.content)
    data.session_end_info.status = status
    value.metadata.plugin_data.content = data.SerializeToString()
