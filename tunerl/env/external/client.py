"""Python clients of the external env protocol (docs/external_env_protocol.md): stdlib
sockets and msgpack, plus torch for the client that acts locally.

Both clients have the same two calls, so a simulator loop does not change with the mode:

    client = RemoteInferenceClient(port=5555)      # or LocalInferenceClient(port=5555)
    obs, _ = env.reset()
    action = client.start(obs)
    while True:
        obs, reward, terminated, truncated, _ = env.step(action)
        action = client.step(obs, reward, terminated, truncated)
        if action is None:                          # the episode ended
            obs, _ = env.reset()
            action = client.start(obs)

`RemoteInferenceClient` asks the server for every action (several envs per message with
`step_many`); `LocalInferenceClient` pulls the module's weights, acts with the same RLModule
code as the server, and sends each episode (or piece of a long one) when it ends.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import numpy as np

from tunerl.env.external import protocol as p


def connect(host: str, port: int, timeout_s: float, connect_timeout_s: float) -> socket.socket:
    """A TCP connection to the server, waiting up to `connect_timeout_s` for it to listen.

    A simulator is often started before the trainer (a Tune trial starts its server only when
    its actor is up, seconds later), so a refused connection is retried with a growing pause
    until the deadline; then the last refusal is raised, naming the address and the wait.
    """
    deadline = time.monotonic() + connect_timeout_s
    pause = 0.05
    while True:
        try:
            return socket.create_connection((host, port), timeout=timeout_s)
        except ConnectionRefusedError as refused:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectionRefusedError(
                    f"no tunerl server listens on {host}:{port} (waited {connect_timeout_s:g} s"
                    " for it; start the training side, or pass a longer connect_timeout_s)"
                ) from refused
            time.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)


class ExternalEnvClient:
    """One connection: the handshake, then request/reply. Every wait has `timeout_s`;
    connecting waits up to `connect_timeout_s` (default `timeout_s`) for the server to listen."""

    mode = p.REMOTE_INFERENCE

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5555,
        token: str | None = None,
        timeout_s: float = 60.0,
        max_message_bytes: int = 1 << 30,
        version: tuple[int, int] = p.PROTOCOL_VERSION,
        connect_timeout_s: float | None = None,
    ):
        wait = timeout_s if connect_timeout_s is None else connect_timeout_s
        self._sock = connect(host, port, timeout_s, wait)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = p.FrameReader(max_message_bytes)
        self._ready: list[bytes] = []
        hello = {"type": p.HELLO, "protocol": p.PROTOCOL_NAME, "version": list(version)}
        hello["mode"] = self.mode
        if token is not None:
            hello["token"] = token
        try:
            self.welcome = self.request(hello)
        except BaseException:
            self._sock.close()
            raise
        from tunerl.core.spaces_json import space_from_json

        self.observation_space = space_from_json(self.welcome["observation_space"])
        self.action_space = space_from_json(self.welcome["action_space"])

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Sends `message` and returns the reply; an error reply raises RemoteError."""
        self._sock.sendall(p.encode(message))
        reply = self.receive()
        if reply["type"] == p.ERROR:
            raise p.RemoteError(reply.get("code", "?"), reply.get("message", ""))
        return reply

    def receive(self) -> dict[str, Any]:
        while not self._ready:
            data = self._sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the server closed the connection")
            self._ready += self._reader.feed(data)
        return p.decode_body(self._ready.pop(0))

    def ping(self) -> None:
        self.request({"type": p.PING})

    def close(self) -> None:
        try:
            self._sock.sendall(p.encode({"type": p.BYE}))
        except OSError:
            pass
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RemoteInferenceClient(ExternalEnvClient):
    """The server computes every action (batched with other clients' requests)."""

    mode = p.REMOTE_INFERENCE

    def step_many(self, envs: list[dict[str, Any]]) -> list[Any]:
        """One message for several envs: each entry is `{"env", "obs"}` to start an episode,
        or `{"env", "obs", "reward", "terminated", "truncated"}` (optionally "reset_obs"
        after an episode's end) to go on; returns an action per entry (None where an
        episode ended and no reset_obs was given)."""
        return self.request({"type": p.STEP, "envs": envs})["actions"]

    def start(self, obs: Any, env: int | str = 0) -> Any:
        """Starts an episode in `env` at `obs`; returns its first action."""
        return self.step_many([{"env": env, "obs": obs}])[0]

    def step(
        self,
        obs: Any,
        reward: float,
        terminated: bool,
        truncated: bool,
        env: int | str = 0,
    ) -> Any:
        """Reports the last action's reward and next observation; returns the next action,
        or None when the episode ended."""
        entry = {"env": env, "obs": obs, "reward": float(reward)}
        entry.update(terminated=bool(terminated), truncated=bool(truncated))
        return self.step_many([entry])[0]


class LocalInferenceClient(ExternalEnvClient):
    """Acts with its own copy of the module; sends episodes, pulls newer weights.

    The module class named by the server resolves as a checkpoint's does
    (`class_resolution.resolve_class`: tunerl's own modules, or those `allow_import` lists);
    weights arrive as arrays, never as code."""

    mode = p.LOCAL_INFERENCE

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5555,
        token: str | None = None,
        timeout_s: float = 60.0,
        explore: bool = True,
        max_piece_steps: int = 500,
        seed: int | None = None,
        allow_import: tuple[str, ...] = (),
        connect_timeout_s: float | None = None,
    ):
        import torch

        from tunerl.core.env_runner import EnvActions
        from tunerl.core.rl_module import RLModuleSpec

        super().__init__(host, port, token, timeout_s, connect_timeout_s=connect_timeout_s)
        spec = RLModuleSpec.from_json(self.welcome["module_spec"], allow_import, "welcome")
        self.module = spec.build()
        self.module.eval()
        self._dist_cls = self.module.get_action_dist_cls()
        self._env_actions = EnvActions(
            self.action_space, self.welcome["normalize_actions"], self.welcome["clip_actions"]
        )
        self._generator = torch.Generator()
        if seed is not None:
            self._generator.manual_seed(seed)
        self.explore = explore
        self.max_piece_steps = max_piece_steps
        self.weights_version = -1
        self._next_episode = 0
        # Per env: the steps not sent yet, and the episode id they belong to.
        self._pieces: dict[int | str, dict[str, list]] = {}
        self._episodes: dict[int | str, int] = {}
        self.pull_weights()

    def pull_weights(self) -> None:
        import torch

        reply = self.request({"type": p.GET_WEIGHTS, "have_version": self.weights_version})
        if reply["weights"] is not None:
            state = {k: torch.from_numpy(np.array(v)) for k, v in reply["weights"].items()}
            self.module.set_state(state)
        self.weights_version = reply["version"]

    def _act(self, env: int | str, obs: Any) -> Any:
        import torch

        from tunerl.core import columns
        from tunerl.core.distributions import sample_with_logp

        dtype = np.float32 if self.observation_space.dtype.kind == "f" else np.int64
        obs = np.asarray(obs, dtype=dtype)
        with torch.inference_mode():
            batch = {columns.OBS: torch.from_numpy(obs[None])}
            out = self.module.forward_exploration(batch)
            dist = self._dist_cls(out[columns.ACTION_DIST_INPUTS])
            if self.explore:
                action, logp = sample_with_logp(dist, self._generator)
            else:
                action = dist.deterministic_sample()
                logp = dist.logp(action)
        piece = self._pieces[env]
        piece["obs"].append(obs)
        piece["actions"].append(action.numpy()[0])
        piece["action_logp"].append(float(logp[0]))
        return self._env_actions(action.numpy())[0].tolist()

    def start(self, obs: Any, env: int | str = 0) -> Any:
        """Starts an episode in `env` at `obs`; returns its first action. (An episode still
        running there is dropped: its steps were not sent.)"""
        self._episodes[env] = self._next_episode
        self._next_episode += 1
        self._pieces[env] = _new_piece()
        return self._act(env, obs)

    def step(
        self,
        obs: Any,
        reward: float,
        terminated: bool,
        truncated: bool,
        env: int | str = 0,
    ) -> Any:
        """Records the step; sends the episode when it ends (and a piece every
        `max_piece_steps` steps) and pulls weights when the server has newer ones.
        Returns the next action, or None when the episode ended."""
        piece = self._pieces[env]
        piece["rewards"].append(float(reward))
        done = bool(terminated or truncated)
        if done or len(piece["rewards"]) >= self.max_piece_steps:
            self._send_piece(env, obs, bool(terminated), bool(truncated))
        if done:
            del self._pieces[env], self._episodes[env]
            return None
        return self._act(env, obs)

    def _send_piece(self, env: int | str, last_obs: Any, terminated: bool, truncated: bool) -> None:
        piece = self._pieces[env]
        message = {
            "type": p.EPISODES,
            "episodes": [
                {
                    "episode": self._episodes[env],
                    "obs": np.stack([*piece["obs"], np.asarray(last_obs, piece["obs"][0].dtype)]),
                    "actions": np.stack(piece["actions"]),
                    "rewards": np.asarray(piece["rewards"], np.float32),
                    "action_logp": np.asarray(piece["action_logp"], np.float32),
                    "terminated": terminated,
                    "truncated": truncated,
                }
            ],
        }
        reply = self.request(message)
        self._pieces[env] = _new_piece()
        if reply["weights_version"] != self.weights_version:
            self.pull_weights()


def _new_piece() -> dict[str, list]:
    return {"obs": [], "actions": [], "action_logp": [], "rewards": []}
