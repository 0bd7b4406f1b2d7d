"""The external env server on loopback: handshake, refusals, disconnects, several clients,
slow clients and both inference modes, through raw sockets and the client library."""

from __future__ import annotations

import threading
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.external.conftest import TIMEOUT_S, external_config, make_runner
from tunerl.core import columns as c
from tunerl.core.env_runner_group import EnvRunnerFailure
from tunerl.env.external import LocalInferenceClient, RemoteError, RemoteInferenceClient
from tunerl.env.external import protocol as p

OBS = [0.01, -0.02, 0.03, 0.04]


def wait_until(condition, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_binds_loopback_by_default_and_welcomes_with_spaces(runner, connect):
    assert runner.address[0] == "127.0.0.1"
    welcome = connect().hello()
    assert welcome["type"] == "welcome" and welcome["version"] == list(p.PROTOCOL_VERSION)
    assert welcome["observation_space"]["type"] == "Box"
    assert welcome["action_space"] == {"type": "Discrete", "n": 2, "start": 0}
    assert welcome["max_message_bytes"] == p.DEFAULT_MAX_MESSAGE_BYTES
    assert welcome["mode"] == "remote"


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_client_started_before_its_server_waits_for_it():
    port = _free_port()
    actions = []

    def play() -> None:
        with RemoteInferenceClient(port=port, timeout_s=TIMEOUT_S) as client:
            actions.append(client.start(OBS))

    client = threading.Thread(target=play, daemon=True)
    client.start()
    time.sleep(0.5)  # the client's first attempts are refused
    runner = make_runner(external_config(port=port))
    try:
        client.join(TIMEOUT_S)
        assert actions and actions[0] in (0, 1)
    finally:
        runner.stop()


def test_a_client_with_no_server_gives_up_naming_the_address_and_the_wait():
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError, match=rf"127.0.0.1:{port} \(waited 0.3 s"):
        RemoteInferenceClient(port=port, connect_timeout_s=0.3)
    assert time.monotonic() - started < TIMEOUT_S


def test_version_mismatch_is_refused_with_both_versions_named(runner, connect):
    raw = connect()
    reply = raw.hello(version=[2, 0])
    assert reply["code"] == p.VERSION_MISMATCH and reply["fatal"]
    assert "1.x" in reply["message"] and "2.0" in reply["message"]
    assert raw.receive() is None  # closed
    assert connect().hello(version=[1, 7])["type"] == "welcome"  # another minor is fine


def test_token_is_required_when_set():
    runner = make_runner(external_config(token="s3cret"))
    try:
        from tests.external.conftest import Raw

        wrong = Raw(runner.address[1])
        assert wrong.hello(token="guess")["code"] == p.BAD_TOKEN
        assert wrong.receive() is None
        missing = Raw(runner.address[1])
        assert missing.hello()["code"] == p.BAD_TOKEN
        with RemoteInferenceClient(port=runner.address[1], token="s3cret") as client:
            assert client.start(OBS) in (0, 1)
        with pytest.raises(RemoteError, match="bad_token"):
            RemoteInferenceClient(port=runner.address[1], token="nope")
    finally:
        runner.stop()


def test_a_message_before_hello_is_refused_and_closed(runner, connect):
    raw = connect()
    reply = raw.request({"type": "step", "envs": [{"env": 0, "obs": OBS}]})
    assert reply["code"] == p.BAD_REQUEST and reply["fatal"] and "hello" in reply["message"]
    assert raw.receive() is None


def test_malformed_message_gets_an_error_and_the_connection_goes_on(runner, connect):
    raw, other = connect(), connect()
    raw.hello(), other.hello()
    raw.sock.sendall(p.HEADER.pack(1) + b"\xc1")
    reply = raw.receive()
    assert reply["code"] == p.MALFORMED and not reply["fatal"]
    assert raw.request({"type": "ping"}) == {"type": "pong"}
    assert other.request({"type": "step", "envs": [{"env": 0, "obs": OBS}]})["type"] == "actions"


def test_oversized_message_closes_only_that_connection():
    runner = make_runner(external_config(max_message_bytes=1000))
    try:
        from tests.external.conftest import Raw

        big, other = Raw(runner.address[1]), Raw(runner.address[1])
        big.hello(), other.hello()
        big.sock.sendall(p.HEADER.pack(5000) + b"x" * 100)
        reply = big.receive()
        assert reply["code"] == p.TOO_LARGE and reply["fatal"] and "1000" in reply["message"]
        assert big.receive() is None
        start = {"type": "step", "envs": [{"env": 0, "obs": OBS}]}
        assert other.request(start)["actions"][0] in (0, 1)
        assert runner.server_stats()["errors_too_large"] == 1
    finally:
        runner.stop()


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"env": 0, "obs": [1.0, 2.0]}, "shape [2]"),
        ({"env": 0, "obs": "abc"}, "must hold numbers"),
        ({"env": 0, "obs": [float("nan")] * 4}, "not finite"),
        ({"env": 5, "obs": OBS, "reward": 1.0}, "no episode is running"),
        ({"env": 0, "obs": {"agent_0": OBS}}, "multi-agent"),
        ({"obs": OBS}, "'env' and 'obs'"),
    ],
)
def test_bad_steps_are_refused_and_nothing_changes(runner, connect, entry, words):
    raw = connect()
    raw.hello()
    reply = raw.request({"type": "step", "envs": [entry]})
    assert reply["type"] == "error" and not reply["fatal"] and words in reply["message"]
    assert runner.server_stats()["episodes_started"] == 0
    assert raw.request({"type": "step", "envs": [{"env": 0, "obs": OBS}]})["type"] == "actions"


def test_remote_episode_rows_are_the_transitions_sent(runner, connect):
    raw = connect()
    raw.hello()
    obs = [np.full(4, 0.01 * i, np.float32) for i in range(4)]
    actions = [raw.request({"type": "step", "envs": [{"env": "a", "obs": obs[0]}]})["actions"][0]]
    for t in (1, 2):
        entry = {"env": "a", "obs": obs[t], "reward": float(t), "terminated": False}
        actions.append(raw.request({"type": "step", "envs": [entry]})["actions"][0])
    last = {"env": "a", "obs": obs[3], "reward": 3.0, "terminated": True, "reset_obs": obs[0]}
    reply = raw.request({"type": "step", "envs": [last]})
    assert reply["actions"][0] in (0, 1)  # the next episode's first action
    batch = runner.sample(num_episodes=1)["default_policy"]
    np.testing.assert_array_equal(batch[c.OBS], np.stack(obs[:3]))
    np.testing.assert_array_equal(batch[c.NEW_OBS], np.stack(obs[1:]))
    assert batch[c.ACTIONS].tolist() == actions
    assert batch[c.REWARDS].tolist() == [1.0, 2.0, 3.0]
    assert batch[c.TERMINATEDS].tolist() == [False, False, True]
    assert batch[c.T].tolist() == [0, 1, 2] and len(set(batch[c.EPS_ID])) == 1
    assert runner.get_metrics()["episode_returns"] == [6.0]


def test_a_client_dropping_mid_episode_loses_only_that_episode(runner, connect):
    done, dropping = connect(), connect()
    done.hello(), dropping.hello()
    done.request({"type": "step", "envs": [{"env": 0, "obs": OBS}]})
    finish = {"env": 0, "obs": OBS, "reward": 1.0, "terminated": True}
    dropping.request({"type": "step", "envs": [{"env": 0, "obs": OBS}]})
    for _ in range(5):
        entry = {"env": 0, "obs": OBS, "reward": 1.0}
        dropping.request({"type": "step", "envs": [entry]})
    done.request({"type": "step", "envs": [finish]})
    dropping.close()
    wait_until(lambda: runner.server_stats()["episodes_dropped"] == 1)
    batch = runner.sample(num_timesteps=1)["default_policy"]
    assert len(batch) == 1 and batch[c.TERMINATEDS].tolist() == [True]
    stats = runner.server_stats()
    assert stats["steps_dropped"] == 5 and stats["episodes_taken"] == 1
    assert stats["steps_added"] == stats["steps_taken"] + stats["steps_dropped"]


def _play(port: int, seed: int, num_envs: int, num_steps: int, errors: list) -> None:
    try:
        envs = [gym.make("CartPole-v1") for _ in range(num_envs)]
        with RemoteInferenceClient(port=port, timeout_s=TIMEOUT_S) as client:
            entries = [{"env": i, "obs": e.reset(seed=seed + i)[0]} for i, e in enumerate(envs)]
            for _ in range(num_steps):
                actions = client.step_many(entries)
                entries = []
                for i, (env, action) in enumerate(zip(envs, actions)):
                    obs, reward, terminated, truncated, _ = env.step(action)
                    entry = {"env": i, "obs": obs, "reward": reward, "terminated": terminated}
                    if terminated or truncated:
                        entry.update(truncated=truncated, reset_obs=env.reset()[0])
                    entries.append(entry)
    except Exception as error:  # noqa: BLE001 - reported by the test
        errors.append(error)


def test_several_clients_at_once_keep_their_episodes_apart(runner):
    errors: list = []
    threads = [
        threading.Thread(target=_play, args=(runner.address[1], 100 * k, 2, 60, errors))
        for k in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S * 3)
    assert not errors
    wait_until(lambda: runner.server_stats()["disconnects"] == 4)
    stats = runner.server_stats()
    assert stats["connections"] == 4 and stats["actions"] == 4 * 2 * 60
    # 60 answered steps per env; the last action's reward never came back. Each client's
    # open episodes went with it; every finished one is in the sample.
    assert stats["steps_added"] == 4 * 2 * 59
    batch = runner.sample(num_timesteps=1)["default_policy"]
    assert len(batch) == stats["steps_added"] - stats["steps_dropped"]
    assert stats["episodes_dropped"] == 8
    for eps_id in np.unique(batch[c.EPS_ID]):
        rows = batch[c.EPS_ID] == eps_id
        assert batch[c.T][rows].tolist() == list(range(rows.sum()))
        # Within one episode every step continues the one before: one env's stream.
        np.testing.assert_array_equal(batch[c.OBS][rows][1:], batch[c.NEW_OBS][rows][:-1])


def test_a_stalled_client_does_not_hold_up_the_others(runner, connect):
    slow, fast = connect(), connect()
    slow.hello(), fast.hello()
    frame = p.encode({"type": "step", "envs": [{"env": 0, "obs": OBS}]})
    slow.sock.sendall(frame[:7])  # half a message, then nothing
    for _ in range(20):
        assert fast.request({"type": "step", "envs": [{"env": 0, "obs": OBS}]})["type"] == "actions"
    slow.sock.sendall(frame[7:])
    assert slow.receive()["type"] == "actions"


def test_clients_wait_while_the_store_is_full_until_a_sample_takes_steps():
    runner = make_runner(external_config(max_buffered_env_steps=3))
    try:
        with RemoteInferenceClient(port=runner.address[1], timeout_s=TIMEOUT_S) as client:
            client.start(OBS)
            for _ in range(3):
                client.step(OBS, 1.0, False, False)
            # The store holds 3 steps: the next step's reply waits for a sample.
            client._sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                client.step(OBS, 1.0, False, False)
            assert len(runner.sample(num_timesteps=3)["default_policy"]) == 3
            client._sock.settimeout(TIMEOUT_S)
            assert client.receive()["type"] == "actions"
    finally:
        runner.stop()


def test_sample_without_clients_fails_after_the_timeout_naming_the_port():
    runner = make_runner(external_config().env_runners(sample_timeout_s=0.2))
    try:
        with pytest.raises(EnvRunnerFailure, match=f"127.0.0.1:{runner.address[1]}"):
            runner.sample(num_timesteps=10)
    finally:
        runner.stop()


def test_local_inference_pieces_weights_and_mode_checks(runner, connect):
    state = runner.get_weights()["default_policy"]
    with LocalInferenceClient(port=runner.address[1], seed=0, max_piece_steps=4) as client:
        for name, value in client.module.get_state().items():
            torch.testing.assert_close(value, state[name])
        env = gym.make("CartPole-v1")
        action = client.start(env.reset(seed=0)[0])
        steps = 0
        while action is not None:
            obs, reward, terminated, truncated, _ = env.step(action)
            action = client.step(obs, reward, terminated, truncated)
            steps += 1
        new = {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}
        runner.set_weights({"default_policy": new})
        action = client.start(env.reset(seed=1)[0])
        for _ in range(4):  # one piece: the ack names the new weights, the client pulls them
            obs, reward, terminated, truncated, _ = env.step(action)
            action = client.step(obs, reward, terminated, truncated)
        assert client.weights_version == runner.policy.weights_version
        name = next(iter(new))
        torch.testing.assert_close(client.module.get_state()[name], new[name])
        with pytest.raises(RemoteError, match="belongs to mode 'remote'"):
            client.request({"type": "step", "envs": [{"env": 0, "obs": OBS}]})
    batch = runner.sample(num_episodes=1)["default_policy"]
    assert len(batch) == steps and batch[c.T].tolist() == list(range(steps))
    assert batch[c.TERMINATEDS][-1] or batch[c.TRUNCATEDS][-1]
    np.testing.assert_array_equal(batch[c.OBS][1:], batch[c.NEW_OBS][:-1])


@pytest.mark.parametrize(
    "piece, words",
    [
        ({"episode": 0, "obs": [OBS], "actions": [0], "rewards": [1.0]}, "must hold 2"),
        ({"episode": 0, "obs": [OBS, OBS], "actions": [0, 1], "rewards": [1.0]}, "shape [2]"),
        ({"episode": 0, "obs": [OBS, OBS], "actions": [0]}, "lacks ['rewards']"),
        ({"episode": True, "obs": [OBS, OBS], "actions": [0], "rewards": [1.0]}, "int or str"),
    ],
)
def test_bad_episode_pieces_are_refused(runner, connect, piece, words):
    raw = connect()
    raw.hello(mode="local")
    reply = raw.request({"type": "episodes", "episodes": [piece]})
    assert reply["type"] == "error" and words in reply["message"]
    assert runner.server_stats()["steps_added"] == 0
