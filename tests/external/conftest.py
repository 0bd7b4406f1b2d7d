"""External-env fixtures: a runner whose server listens on a free loopback port (stopped
after the test), and a raw protocol connection to it with a timeout on every wait."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import pytest

from tunerl import PPOConfig
from tunerl.core.rl_module import MultiRLModuleSpec, RLModuleSpec
from tunerl.env.external import ExternalEnvRunner
from tunerl.env.external import protocol as p

CARTPOLE = gym.make("CartPole-v1")
TIMEOUT_S = 10.0


def external_config(**env_config: Any) -> PPOConfig:
    return (
        PPOConfig()
        .environment(
            env=None,
            observation_space=CARTPOLE.observation_space,
            action_space=CARTPOLE.action_space,
            env_config={"port": 0, **env_config},
        )
        .env_runners(env_runner_cls=ExternalEnvRunner, sample_timeout_s=TIMEOUT_S)
        .training(train_batch_size_per_learner=64, minibatch_size=32, num_epochs=1)
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .debugging(seed=0)
    )


def make_runner(config: PPOConfig) -> ExternalEnvRunner:
    spec = RLModuleSpec(
        observation_space=config.observation_space,
        action_space=config.action_space,
        model_config=config.model_config,
    )
    return ExternalEnvRunner(
        config, MultiRLModuleSpec(rl_module_specs={"default_policy": spec}), seed=0
    )


@pytest.fixture
def runner() -> Iterator[ExternalEnvRunner]:
    runner = make_runner(external_config())
    yield runner
    runner.stop()


class Raw:
    """A protocol connection without the client library: frames in, frames out."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = p.FrameReader(1 << 30)
        self.ready: list[bytes] = []

    def send(self, message: dict) -> None:
        self.sock.sendall(p.encode(message))

    def receive(self) -> dict | None:
        """The next message, or None when the server closed the connection."""
        while not self.ready:
            data = self.sock.recv(1 << 16)
            if not data:
                return None
            self.ready += self.reader.feed(data)
        return p.decode_body(self.ready.pop(0))

    def request(self, message: dict) -> dict | None:
        self.send(message)
        return self.receive()

    def hello(self, mode: str = "remote", **fields: Any) -> dict | None:
        message = {"type": "hello", "protocol": p.PROTOCOL_NAME, "version": [1, 0], "mode": mode}
        return self.request({**message, **fields})

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect(runner: ExternalEnvRunner) -> Iterator[Any]:
    opened: list[Raw] = []

    def open_connection(port: int | None = None) -> Raw:
        raw = Raw(port or runner.address[1])
        opened.append(raw)
        return raw

    yield open_connection
    for raw in opened:
        raw.close()
