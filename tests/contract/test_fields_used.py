"""Every field a config accepts is read by the algorithm: a field that would be ignored must
not be accepted (it is refused with the closest valid name instead).

A field counts as read when code outside the config machinery (config.py, fields.py,
config_json.py, which copy, check and serialize every field) reads it from the config while
the algorithm is built with a local and a remote runner, evaluates, trains, is placed by
Tune's resource request, saves, restores and takes a new trial's config."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import tunerl
from tunerl import AlgorithmConfig

from .helpers import (
    ALGORITHM_NAMES,
    config_class,
    default_env,
    recorded_input,
    tiny_config,
    trains_offline,
)

# The config machinery, and its methods that handle every field alike (copy, check,
# compare, serialize): a read inside one of them does not count. Its other methods derive a
# quantity from a few fields (env_steps_per_sample): a read there counts for their caller.
CONFIG_MACHINERY = ("core/config.py", "core/fields.py", "core/config_json.py")
WHOLE_CONFIG = {
    "to_dict", "copy", "validate", "__eq__", "__repr__", "needs_new_runners", "with_overrides",
    "_check_overrides", "update_from_dict", "config_to_json", "_check_model_config_keys",
    "model_config_keys", "field_types", "get",
}  # fmt: skip
# Fields read only when something fails, which a passing run does not do; each is tested
# where its failure is made (tests/unit/test_fault_tolerance.py).
READ_ON_FAILURE = {
    "restart_failed_env_runners": "when a runner actor dies or its env raises",
    "max_num_env_runner_restarts": "when a runner or sub-env is restarted",
    "ignore_env_runner_failures": "when a runner is not restarted",
}
# Fields only the multi-agent runner reads, which this single-agent run does not build; each
# is tested on a multi-agent env (tests/unit/test_multi_agent_runner.py and
# tests/contract/test_multi_agent.py, which train every algorithm with a mapping).
READ_ON_MULTI_AGENT = {
    "policy_mapping_fn": "for each agent that first appears in an episode",
    "count_steps_by": "when a multi-agent runner counts the steps of a sample",
}


def counts(frame: Any) -> bool:
    """Whether a read from `frame` is the algorithm's: the first frame outside the config
    machinery is reached without passing a method that handles every field."""
    while frame is not None:
        code = frame.f_code
        if not code.co_filename.replace("\\", "/").endswith(CONFIG_MACHINERY):
            return True
        if code.co_name in WHOLE_CONFIG:
            return False
        frame = frame.f_back
    return False


def record_reads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """From now on, the names of fields read outside the config machinery."""
    reads: set[str] = set()
    plain = object.__getattribute__

    def recording(self: Any, name: str) -> Any:
        if name in type(self).FIELDS and counts(sys._getframe(1)):
            reads.add(name)
        return plain(self, name)

    monkeypatch.setattr(AlgorithmConfig, "__getattribute__", recording)
    return reads


# Switches that open a branch reading more fields, turned on in the run with a remote runner
# where the config declares them: the KL penalty (kl_target), hard target copies
# (target_network_update_freq).
BRANCHES = {"use_kl_loss": True, "tau": 1.0}


def exercise(name: str, num_env_runners: int, tmp_path: Path) -> None:
    branches = {
        field: value
        for field, value in BRANCHES.items()
        if num_env_runners and field in config_class(name).FIELDS
    }
    config = tiny_config(name, num_env_runners=num_env_runners, **branches).evaluation(
        evaluation_interval=1, evaluation_duration=2
    )
    # Recording, in the run with the local runner (its fields are read where an output is
    # set): the training runner, or for an algorithm that does not sample, the evaluation
    # runner; that one is remote in the other run (the timeouts are read for it).
    output = {"output": str(tmp_path / "recorded"), "output_max_rows_per_file": 50}
    if trains_offline(name):
        if num_env_runners:
            config.evaluation(evaluation_num_env_runners=1)
        else:
            config.evaluation(evaluation_config=output)
    elif not num_env_runners:
        config.offline_data(**output)
    if not num_env_runners:  # every estimator, on data recorded in the algorithm's env
        config.evaluation(
            offline_evaluation_interval=1,
            offline_evaluation_type=["is", "wis", "pdis", "fqe"],
            offline_evaluation_input=recorded_input(default_env(name)),
            offline_evaluation_fqe_updates=4,
        )
    tunerl.ALGORITHMS[name].default_resource_request(config)
    algo = config.build_algo()
    try:
        algo.train()
        algo.train()
        path = algo.save_to_path(tmp_path / f"checkpoint_{num_env_runners}")
        algo.reset_config(tiny_config(name, num_env_runners=num_env_runners, seed=1).to_dict())
        algo.restore_from_path(path)
        algo.train()
    finally:
        algo.stop()


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_every_accepted_field_is_read(name, ray_session, monkeypatch, tmp_path):
    reads = record_reads(monkeypatch)
    for num_env_runners in (0, 1):
        exercise(name, num_env_runners, tmp_path)
    fields = config_class(name).FIELDS
    # A field whose only allowed value is its default (num_learners=0, RLlib's name kept for
    # its scripts) ignores nothing: any other value is refused.
    fixed = {n for n, f in fields.items() if f.low is not None and f.low == f.high == f.default}
    unread = sorted(set(fields) - reads - set(READ_ON_FAILURE) - set(READ_ON_MULTI_AGENT) - fixed)
    assert not unread, (
        f"{name}'s config accepts {unread} but nothing read them: make each change the "
        "algorithm's behaviour, or stop accepting it"
    )


def test_the_recorder_sees_a_read_and_ignores_the_config_machinery(monkeypatch):
    reads = record_reads(monkeypatch)
    config = tiny_config(ALGORITHM_NAMES[0])
    config.to_dict()  # every field, read by config.py: not counted
    assert reads == set()
    assert config.gamma > 0  # read here, outside the machinery
    assert reads == {"gamma"}
