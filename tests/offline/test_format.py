"""The offline data format: tunerl -> Parquet -> tunerl, an RLlib-format file written from
RLlib's documented row schema, files that must be refused (missing column, wrong shape,
corrupt footer, RLlib's pickled columns), and a writer killed mid-run."""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunerl import PPOConfig
from tunerl.algorithms.bc import BCConfig
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch
from tunerl.offline.action_units import env_to_module_units, module_to_env_units
from tunerl.offline.offline_data import OfflineData, OfflineDataError, discounted_returns
from tunerl.offline.output_writer import METADATA_KEY, OutputWriter

CARTPOLE = gym.make("CartPole-v1")
PENDULUM = gym.make("Pendulum-v1")


def transitions(num_rows: int, continuous: bool = False, eps_len: int = 10) -> SampleBatch:
    rng = np.random.default_rng(0)
    obs_dim = 3 if continuous else 4
    actions = (
        rng.uniform(-1, 1, (num_rows, 1)).astype(np.float32)
        if continuous
        else rng.integers(0, 2, num_rows)
    )
    t = np.arange(num_rows) % eps_len
    return SampleBatch(
        {
            c.OBS: rng.normal(size=(num_rows, obs_dim)).astype(np.float32),
            c.ACTIONS: actions,
            c.REWARDS: rng.normal(size=num_rows).astype(np.float32),
            c.NEW_OBS: rng.normal(size=(num_rows, obs_dim)).astype(np.float32),
            c.TERMINATEDS: t == eps_len - 1,
            c.TRUNCATEDS: np.zeros(num_rows, bool),
            c.T: t,
            c.EPS_ID: np.arange(num_rows) // eps_len,
            c.ACTION_LOGP: rng.normal(size=num_rows).astype(np.float32),
        }
    )


def write(directory: Path, batch: SampleBatch, env: gym.Env, rows_per_file: int = 25) -> None:
    writer = OutputWriter(
        directory, env.observation_space, env.action_space, env="x", max_rows_per_file=rows_per_file
    )
    writer.write(MultiAgentBatch({c.DEFAULT_MODULE_ID: batch}, len(batch)))
    writer.close()


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "box"])
def test_round_trip_gives_back_every_row(tmp_path, continuous):
    env = PENDULUM if continuous else CARTPOLE
    batch = transitions(60, continuous)
    write(tmp_path, batch, env)
    files = sorted(tmp_path.glob("*.parquet"))
    assert [pq.read_metadata(f).num_rows for f in files] == [25, 25, 10]
    meta = json.loads(pq.read_schema(files[0]).metadata[METADATA_KEY])
    assert meta["action_space"]["type"] == ("Box" if continuous else "Discrete")
    table = pq.read_table(tmp_path)
    assert set(table.column_names) >= {c.EPS_ID, c.AGENT_ID, c.MODULE_ID, c.OBS, c.NEW_OBS}
    assert set(table[c.MODULE_ID].to_pylist()) == {c.DEFAULT_MODULE_ID}
    if continuous:  # files hold the env's units: Pendulum's [-2, 2]
        np.testing.assert_allclose(
            np.stack(table[c.ACTIONS].to_numpy(zero_copy_only=False)), 2 * batch[c.ACTIONS], 1e-6
        )
    data = OfflineData(tmp_path, env.observation_space, env.action_space, seed=0)
    rows = data.all_rows()
    order = np.argsort(rows[c.OBS][:, 0])
    expected = np.argsort(batch[c.OBS][:, 0])
    for name in (c.OBS, c.ACTIONS, c.REWARDS, c.NEW_OBS, c.TERMINATEDS, c.ACTION_LOGP):
        np.testing.assert_allclose(rows[name][order], batch[name][expected], rtol=1e-6)


def test_minibatches_are_shuffled_and_cover_the_data_once_per_pass(tmp_path):
    write(tmp_path, transitions(60), CARTPOLE)
    data = OfflineData(tmp_path, CARTPOLE.observation_space, CARTPOLE.action_space, seed=1)
    first = np.concatenate([data.sample(20)[c.OBS][:, 0] for _ in range(3)])
    assert len(np.unique(first)) == 60  # one pass: every row once
    assert not np.array_equal(first, data.all_rows()[c.OBS][:, 0])


def test_a_stream_larger_than_the_buffer_serves_every_row(tmp_path):
    write(tmp_path, transitions(100), CARTPOLE, rows_per_file=10)
    data = OfflineData(
        tmp_path, CARTPOLE.observation_space, CARTPOLE.action_space, shuffle_buffer_size=30
    )
    seen = np.concatenate([data.sample(10)[c.OBS][:, 0] for _ in range(10)])
    assert len(np.unique(seen)) == 100


def test_returns_are_discounted_within_episodes():
    episode = np.array([1, 0, 1, 0, 0])
    step = np.array([1, 0, 0, 2, 1])
    rewards = np.array([10.0, 1.0, 20.0, 3.0, 2.0])
    returns = discounted_returns(episode, step, rewards, 0.5)
    # episode 0: r = 1, 2, 3 -> 1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3; episode 1: 20, 10.
    np.testing.assert_allclose(returns, [10.0, 2.75, 25.0, 3.0, 3.5])


def test_action_units_round_trip():
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32))
    module = np.array([[-1.0, 1.0], [0.5, 0.0]], np.float32)
    env_units = module_to_env_units(space, module, normalize=True)
    np.testing.assert_allclose(env_units, [[-2.0, 10.0], [1.0, 5.0]])
    np.testing.assert_allclose(env_to_module_units(space, env_units, True), module)


def rllib_tensor_field(name: str, shape: tuple[int, ...]) -> pa.Field:
    """A column as Ray Data writes a fixed-shape tensor: large_list<float> storage with its
    extension type named in the field metadata (read back as the plain storage type here)."""
    metadata = {
        b"ARROW:extension:name": b"ray.data.arrow_tensor_v2",
        b"ARROW:extension:metadata": json.dumps(list(shape)).encode(),
    }
    return pa.field(name, pa.large_list(pa.float32()), metadata=metadata)


def rllib_fixture(path: Path, num_rows: int = 400) -> None:
    """A file as RLlib 2.60's `offline_data(output=..., output_compress_columns=[])` writes
    it from PPO on CartPole-v1, column for column as a real run's files read with pyarrow:
    string eps_id, all-null agent_id and module_id, tensor columns, int32 actions, double
    rewards, `weights_seq_no`, no `t`, no tunerl metadata. Actions come from a rule that
    balances CartPole."""
    rng = np.random.default_rng(0)
    obs = rng.uniform(-0.5, 0.5, size=(num_rows, 4)).astype(np.float32)
    actions = (3 * obs[:, 2] + obs[:, 3] > 0).astype(np.int32)
    schema = pa.schema(
        [
            pa.field("eps_id", pa.string()),
            pa.field("agent_id", pa.null()),
            pa.field("module_id", pa.null()),
            rllib_tensor_field("obs", (4,)),
            pa.field("actions", pa.int32()),
            pa.field("rewards", pa.float64()),
            rllib_tensor_field("new_obs", (4,)),
            pa.field("terminateds", pa.bool_()),
            pa.field("truncateds", pa.bool_()),
            rllib_tensor_field("action_dist_inputs", (2,)),
            pa.field("action_logp", pa.float32()),
            pa.field("weights_seq_no", pa.int64()),
        ]
    )
    columns = {
        "eps_id": [f"{i // 50:032x}" for i in range(num_rows)],
        "agent_id": [None] * num_rows,
        "module_id": [None] * num_rows,
        "obs": obs.tolist(),
        "actions": actions,
        "rewards": np.ones(num_rows),
        "new_obs": obs.tolist(),
        "terminateds": np.arange(num_rows) % 50 == 49,
        "truncateds": np.zeros(num_rows, bool),
        "action_dist_inputs": np.zeros((num_rows, 2)).tolist(),
        "action_logp": np.full(num_rows, np.log(0.5), np.float32),
        "weights_seq_no": np.zeros(num_rows, np.int64),
    }
    pq.write_table(pa.table(columns, schema=schema), path)


def test_bc_trains_on_an_rllib_format_file(tmp_path, build):
    rllib_fixture(tmp_path / "rllib.parquet")
    algo = build(
        BCConfig()
        .environment("CartPole-v1")
        .offline_data(input_=str(tmp_path / "*.parquet"))
        .training(lr=1e-2, train_batch_size_per_learner=64)
        .reporting(min_train_timesteps_per_iteration=1280)
        .evaluation(
            evaluation_interval=2, evaluation_duration=3, evaluation_config={"explore": False}
        )
        .debugging(seed=0)
    )
    algo.train()
    result = algo.train()
    assert result[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == 2 * 1280
    # The cloned rule balances far longer than a random policy's ~22 steps.
    assert result[m.EVALUATION_RESULTS][m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN] > 100


def test_files_that_cannot_be_trained_on_are_named_with_their_column(tmp_path):
    spaces = (CARTPOLE.observation_space, CARTPOLE.action_space)
    rllib_fixture(tmp_path / "good.parquet")
    table = pq.read_table(tmp_path / "good.parquet")
    pq.write_table(table.drop_columns(["new_obs"]), tmp_path / "missing.parquet")
    with pytest.raises(OfflineDataError, match=r"missing\.parquet has no column 'new_obs'"):
        OfflineData(tmp_path / "missing.parquet", *spaces)
    narrow = table.set_column(3, "obs", pa.array([[0.0, 1.0]] * len(table), pa.list_(pa.float32())))
    pq.write_table(narrow, tmp_path / "narrow.parquet")
    with pytest.raises(OfflineDataError, match=r"narrow\.parquet, column 'obs' holds 2 values"):
        OfflineData(tmp_path / "narrow.parquet", *spaces)
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(OfflineDataError, match=r"cut\.parquet is not a readable Parquet file"):
        OfflineData(tmp_path / "cut.parquet", *spaces)
    with pytest.raises(OfflineDataError, match="outside Discrete"):
        bad = table.set_column(4, "actions", pa.array(np.full(len(table), 7)))
        pq.write_table(bad, tmp_path / "bad_action.parquet")
        OfflineData(tmp_path / "bad_action.parquet", *spaces)
    write(tmp_path / "pendulum", transitions(10, continuous=True), PENDULUM)
    with pytest.raises(OfflineDataError, match="recorded with observation_space"):
        OfflineData(tmp_path / "pendulum", *spaces)
    with pytest.raises(OfflineDataError, match="names no Parquet file"):
        OfflineData(tmp_path / "nothing-here", *spaces)


class _Payload:
    """Unpickling this runs `touch MARKER`: what a packed column could hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_rllib_pickled_columns_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    # RLlib's pack(): base64 of a compressed cloudpickle; uncompressed here (no lz4 installed),
    # which the reader must refuse all the same: it never unpickles a column.
    packed = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    rllib_fixture(tmp_path / "plain.parquet", 4)
    table = pq.read_table(tmp_path / "plain.parquet")
    table = table.set_column(3, "obs", pa.array([packed] * 4))
    pq.write_table(table, tmp_path / "packed.parquet")
    refused = r"column 'obs' holds string.*output_compress_columns=\[\]"
    with pytest.raises(OfflineDataError, match=refused):
        OfflineData(tmp_path / "packed.parquet", CARTPOLE.observation_space, CARTPOLE.action_space)
    assert not marker.exists()


def test_recording_from_any_algorithm_and_a_killed_writer_keeps_its_files(tmp_path):
    folder = tmp_path / "data"
    script = textwrap.dedent(
        f"""
        from tunerl import PPOConfig
        algo = (PPOConfig().environment("CartPole-v1")
                .training(train_batch_size_per_learner=200, minibatch_size=100)
                .offline_data(output={str(folder)!r}, output_max_rows_per_file=100)
                .build_algo())
        while True:
            algo.train()
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("*.parquet"))) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    files = sorted(folder.glob("*.parquet"))
    assert len(files) >= 6
    # Every file is whole; a killed writer loses only the rows it had not written.
    assert all(pq.read_metadata(f).num_rows == 100 for f in files)
    data = OfflineData(folder, CARTPOLE.observation_space, CARTPOLE.action_space)
    assert data.num_rows == 100 * len(files)


def test_stop_writes_the_last_rows(tmp_path, build):
    algo = build(
        PPOConfig()
        .environment("CartPole-v1")
        .training(train_batch_size_per_learner=150, minibatch_size=50)
        .offline_data(output=str(tmp_path), output_max_rows_per_file=100)
    )
    result = algo.train()
    algo.stop()
    sampled = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    assert pq.read_table(tmp_path).num_rows == sampled
