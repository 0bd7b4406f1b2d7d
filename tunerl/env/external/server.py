"""ExternalEnvServer: many external clients over TCP, one thread (a `selectors` loop).

Every client is a session with its own buffers, so a slow or stalled client (one that sends
half a message, or reads its replies slowly) holds up nobody: the loop never blocks on one
socket. In each round, the `step` messages of every client that sent one are answered with
one forward pass over all their observations (server-side inference, batched across
clients). Steps go to an `EpisodeStore` keyed by (session, env), so each client's episodes
stay apart and a client that drops loses only its open episodes. When the store holds
`max_buffered_env_steps` steps, `step` and `episodes` messages wait (the client waits for
its reply) until the env runner's `sample()` takes them: a client cannot outrun training by
more than that.
"""

from __future__ import annotations

import collections
import hmac
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tunerl.core import spaces_json
from tunerl.env.external import protocol as p
from tunerl.env.external.episode_store import EpisodeStore
from tunerl.env.external.policy import ServerPolicy

logger = logging.getLogger(__name__)

# A client must say hello within this long after connecting.
HANDSHAKE_TIMEOUT_S = 10.0
# Replies a client has not read yet, beyond which it is disconnected (it is not reading).
MAX_UNSENT_BYTES = 64 * 1024 * 1024
_RECV_BYTES = 256 * 1024
_SELECT_TIMEOUT_S = 0.05


class _Session:
    def __init__(self, sock: socket.socket, number: int, max_message_bytes: int):
        self.sock = sock
        self.number = number
        host, port = sock.getpeername()[:2]
        self.peer = f"{host}:{port}"
        self.reader = p.FrameReader(max_message_bytes)
        # Decoded messages, or the ProtocolError a frame's body raised (answered in turn).
        self.inbox: collections.deque[dict[str, Any] | p.ProtocolError] = collections.deque()
        self.outbox = bytearray()
        self.mode: str | None = None  # set by the hello
        self.connected_at = time.monotonic()
        self.close_after_send = False
        # Remote inference: env id -> (obs, action, logp, dist inputs, value) of the step
        # the client is taking now (its reward and next obs come in its next message).
        self.pending: dict[Any, tuple] = {}
        self.local_episodes: set[Any] = set()

    def keys(self) -> list[tuple]:
        return [(self.number, "env", env) for env in self.pending] + [
            (self.number, "episode", episode) for episode in self.local_episodes
        ]


class ExternalEnvServer:
    """Listens on (host, port) until `stop()`; `port=0` picks a free one (see `address`)."""

    def __init__(
        self,
        policy: ServerPolicy,
        store: EpisodeStore,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_message_bytes: int = p.DEFAULT_MAX_MESSAGE_BYTES,
        max_buffered_env_steps: Callable[[], int] = lambda: 1 << 62,
        max_clients: int = 1024,
    ):
        self.policy = policy
        self.store = store
        self.token = token
        self.max_message_bytes = max_message_bytes
        self._max_buffered = max_buffered_env_steps
        self.max_clients = max_clients
        self._listener = socket.create_server((host, port), reuse_port=False, backlog=128)
        self._listener.setblocking(False)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._sessions: dict[socket.socket, _Session] = {}
        self._next_session = 0
        self._stopping = threading.Event()
        self.counts = collections.Counter()
        self._welcome = {
            "type": p.WELCOME,
            "protocol": p.PROTOCOL_NAME,
            "version": list(p.PROTOCOL_VERSION),
            "max_message_bytes": max_message_bytes,
            "observation_space": spaces_json.space_to_json(policy.observation_space),
            "action_space": spaces_json.space_to_json(policy.action_space),
            "module_spec": policy.module.spec().to_json(),
            "normalize_actions": policy.normalize_actions,
            "clip_actions": policy.clip_actions,
        }
        self._thread = threading.Thread(target=self._run, name="tunerl-external-server")
        self._thread.daemon = True
        self._thread.start()
        logger.info("External env server listening on %s:%d", *self.address)

    # ------------------------------------------------------------------ outside calls
    def wake(self) -> None:
        """Makes the loop look at waiting messages again (the store has room now)."""
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:
            pass  # a wake-up is already pending
        except OSError:
            pass  # stopped: nothing to wake

    @property
    def num_clients(self) -> int:
        return len(self._sessions)

    def stats(self) -> dict[str, int]:
        return {**self.counts, "clients_connected": self.num_clients}

    def stop(self) -> None:
        """Closes every connection and the listening socket; returns when the loop ended."""
        if self._wake_w.fileno() < 0:
            return  # stopped before
        self._stopping.set()
        self.wake()
        self._thread.join(timeout=10)
        # Closed here, not by the loop: the loop may end between set() and wake() above.
        self._wake_r.close()
        self._wake_w.close()

    # --------------------------------------------------------------------- the loop
    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, events in self._selector.select(_SELECT_TIMEOUT_S):
                    sock = key.fileobj
                    if sock is self._listener:
                        self._accept()
                    elif sock is self._wake_r:
                        self._drain_wakeups()
                    else:
                        session = self._sessions.get(sock)
                        if session is None:
                            continue
                        if events & selectors.EVENT_READ:
                            self._receive(session)
                        if events & selectors.EVENT_WRITE and sock in self._sessions:
                            self._flush(session)
                self._serve_inboxes()
                self._expire_handshakes()
        except Exception:  # noqa: BLE001 - the server thread must log what killed it
            logger.exception("The external env server stopped on an error.")
        finally:
            for session in list(self._sessions.values()):
                self._close(session, "server stopping")
            self._selector.close()
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            # Small messages in both directions: without this, Nagle's algorithm and delayed
            # ACKs hold each reply ~40 ms (research notes, section 5).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = _Session(sock, self._next_session, self.max_message_bytes)
            self._next_session += 1
            self._sessions[sock] = session
            self._selector.register(sock, selectors.EVENT_READ)
            self.counts["connections"] += 1
            if len(self._sessions) > self.max_clients:
                self._fail(session, p.BAD_REQUEST, f"this server takes {self.max_clients} clients")

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _receive(self, session: _Session) -> None:
        try:
            data = session.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._close(session, f"receive failed ({error})")
            return
        if not data:
            self._close(session, "client closed the connection")
            return
        if session.close_after_send:
            return  # a fatal error was sent; what follows is not read
        try:
            bodies = session.reader.feed(data)
        except p.ProtocolError as error:
            self._fail(session, error.code, str(error), fatal=True)
            return
        for body in bodies:
            try:
                session.inbox.append(p.decode_body(body))
            except p.ProtocolError as error:
                # The frame boundary is intact: answer this message, keep the connection.
                session.inbox.append(error)

    def _serve_inboxes(self) -> None:
        """Answers what every session sent, in order per session; `step` messages of all
        sessions share one forward pass."""
        steps: list[tuple[_Session, dict]] = []
        for session in list(self._sessions.values()):
            while session.inbox and not session.close_after_send:
                message = session.inbox[0]
                kind = message["type"] if isinstance(message, dict) else p.ERROR
                if kind in (p.STEP, p.EPISODES) and not self._has_room():
                    break  # waits until sample() takes steps (see the module docstring)
                session.inbox.popleft()
                try:
                    if isinstance(message, p.ProtocolError):
                        raise message
                    if kind == p.STEP:
                        self._check_mode(session, p.REMOTE_INFERENCE, kind)
                        steps.append((session, self._parse_step(session, message)))
                        break  # one step per session per round: its reply comes first
                    self._handle(session, message)
                except p.ProtocolError as error:
                    self._fail(session, error.code, str(error), error.fatal)
        if steps:
            self._answer_steps(steps)
        for session in list(self._sessions.values()):
            if session.outbox:
                self._flush(session)

    def _has_room(self) -> bool:
        return self.store.num_buffered_steps < self._max_buffered()

    def _expire_handshakes(self) -> None:
        now = time.monotonic()
        for session in list(self._sessions.values()):
            if session.mode is None and now - session.connected_at > HANDSHAKE_TIMEOUT_S:
                self._fail(session, p.TIMEOUT, "no hello within 10 s of connecting", fatal=True)

    # ------------------------------------------------------------------- messages
    def _handle(self, session: _Session, message: dict[str, Any]) -> None:
        kind = message["type"]
        if session.mode is None:
            if kind != p.HELLO:
                raise p.ProtocolError(
                    p.BAD_REQUEST, f"the first message must be 'hello', got {kind!r}", fatal=True
                )
            self._hello(session, message)
        elif kind == p.PING:
            self._send(session, {"type": p.PONG})
        elif kind == p.GET_WEIGHTS:
            self._check_mode(session, p.LOCAL_INFERENCE, kind)
            have = message.get("have_version")
            self._send(
                session, self.policy.weights_message(have if isinstance(have, int) else None)
            )
        elif kind == p.EPISODES:
            self._check_mode(session, p.LOCAL_INFERENCE, kind)
            self._episodes(session, message)
        elif kind == p.BYE:
            self._close(session, "client said bye")
        elif kind == p.HELLO:
            raise p.ProtocolError(p.BAD_REQUEST, "hello was already received on this connection")
        else:
            allowed = [p.PING, p.STEP, p.GET_WEIGHTS, p.EPISODES, p.BYE]
            raise p.ProtocolError(p.BAD_REQUEST, f"unknown message type {kind!r}; one of {allowed}")

    def _hello(self, session: _Session, message: dict[str, Any]) -> None:
        version = message.get("version")
        if message.get("protocol") != p.PROTOCOL_NAME or not (
            isinstance(version, list)
            and len(version) == 2
            and all(isinstance(v, int) for v in version)
        ):
            raise p.ProtocolError(
                p.BAD_REQUEST,
                f"hello needs protocol={p.PROTOCOL_NAME!r} and version=[major, minor]; got "
                f"protocol={message.get('protocol')!r}, version={version!r}",
                fatal=True,
            )
        if version[0] != p.PROTOCOL_VERSION[0]:
            raise p.ProtocolError(
                p.VERSION_MISMATCH,
                f"this server speaks {p.PROTOCOL_NAME} {p.PROTOCOL_VERSION[0]}.x "
                f"({p.PROTOCOL_VERSION[0]}.{p.PROTOCOL_VERSION[1]}); the client sent "
                f"{version[0]}.{version[1]}. Use a client of major version "
                f"{p.PROTOCOL_VERSION[0]}.",
                fatal=True,
            )
        if self.token is not None:
            given = message.get("token")
            if not isinstance(given, str) or not hmac.compare_digest(given, self.token):
                raise p.ProtocolError(p.BAD_TOKEN, "the token is missing or wrong", fatal=True)
        mode = message.get("mode", p.REMOTE_INFERENCE)
        if mode not in p.INFERENCE_MODES:
            raise p.ProtocolError(
                p.BAD_REQUEST, f"mode={mode!r}; allowed: {list(p.INFERENCE_MODES)}", fatal=True
            )
        session.mode = mode
        self.counts["handshakes"] += 1
        self._send(session, {**self._welcome, "session": session.number, "mode": mode})

    @staticmethod
    def _check_mode(session: _Session, mode: str, kind: str) -> None:
        if session.mode is None:
            raise p.ProtocolError(p.BAD_REQUEST, "the first message must be 'hello'", fatal=True)
        if session.mode != mode:
            raise p.ProtocolError(
                p.BAD_REQUEST,
                f"{kind!r} belongs to mode {mode!r}; this client said hello with mode "
                f"{session.mode!r}",
            )

    def _parse_step(self, session: _Session, message: dict[str, Any]) -> dict[str, Any]:
        """Checks a whole step message before anything changes: what it continues, ends
        and starts, and its observations as arrays."""
        entries = message.get("envs")
        if not isinstance(entries, list) or not entries:
            raise p.ProtocolError(p.BAD_REQUEST, "step needs 'envs', a non-empty list of maps")
        seen, continuing, ending, act_obs, act_envs = set(), [], [], [], []
        for index, entry in enumerate(entries):
            where = f"envs[{index}]"
            if not isinstance(entry, dict) or "obs" not in entry or "env" not in entry:
                raise p.ProtocolError(p.BAD_REQUEST, f"{where} must be a map with 'env' and 'obs'")
            env = entry["env"]
            if not isinstance(env, int | str) or isinstance(env, bool) or env in seen:
                raise p.ProtocolError(
                    p.BAD_REQUEST, f"{where}.env={env!r} must be an int or string, once per message"
                )
            if isinstance(entry["obs"], dict):
                raise p.ProtocolError(
                    p.UNSUPPORTED,
                    f"{where}.obs is a map (multi-agent); this server trains one agent per env",
                )
            seen.add(env)
            if "reward" in entry:
                if env not in session.pending:
                    raise p.ProtocolError(
                        p.BAD_REQUEST,
                        f"{where} (env {env!r}) has a reward but no episode is running in that "
                        "env: an episode's first step sends 'obs' alone",
                    )
                reward = entry["reward"]
                if not isinstance(reward, int | float) or isinstance(reward, bool):
                    raise p.ProtocolError(p.BAD_REQUEST, f"{where}.reward={reward!r} is no number")
                if self.policy.check_observations and not np.isfinite(reward):
                    raise p.ProtocolError(p.BAD_REQUEST, f"{where}.reward={reward!r} is not finite")
                terminated = bool(entry.get("terminated", False))
                truncated = bool(entry.get("truncated", False))
                continuing.append((env, float(reward), terminated, truncated, index))
                if terminated or truncated:
                    ending.append(env)
                    if "reset_obs" in entry:
                        act_envs.append((env, index, True))
                        act_obs.append(entry["reset_obs"])
                    continue
            act_envs.append((env, index, "reward" not in entry))
            act_obs.append(entry["obs"])
        next_obs = self.policy.observations([e["obs"] for e in entries], "envs")
        obs = self.policy.observations(act_obs, "envs (acting)") if act_obs else None
        return {
            "num_entries": len(entries),
            "continuing": continuing,
            "next_obs": next_obs,
            "act_envs": act_envs,
            "obs": obs,
        }

    def _answer_steps(self, steps: list[tuple[_Session, dict]]) -> None:
        store = self.store
        # 1. Finish the steps the clients just took (reward and next observation are in).
        for session, step in steps:
            for env, reward, terminated, truncated, index in step["continuing"]:
                obs, action, logp, dist_inputs, value = session.pending.pop(env)
                row = (obs, action, reward, terminated, truncated, step["next_obs"][index],
                       logp, dist_inputs, value)  # fmt: skip
                ended = terminated or truncated
                store.add_rows((session.number, "env", env), [row], ended)
                if not ended:
                    session.pending[env] = None  # open, acting below
        # 2. Act for every env that goes on or starts, in one forward pass.
        acting = [(s, step) for s, step in steps if step["obs"] is not None]
        if acting:
            obs = np.concatenate([step["obs"] for _, step in acting])
            actions, logp, dist_inputs, values = self.policy.act(obs)
            env_actions = self.policy.env_actions(actions)
        row = 0
        for session, step in steps:
            reply: list[Any] = [None] * step["num_entries"]
            if step["obs"] is not None:
                for (env, index, starts), obs_row in zip(step["act_envs"], step["obs"]):
                    if starts:
                        store.start((session.number, "env", env))
                    session.pending[env] = (
                        obs_row,
                        actions[row],
                        float(logp[row]),
                        dist_inputs[row],
                        float(values[row]),
                    )
                    reply[index] = env_actions[row]
                    row += 1
            self.counts["actions"] += len(step["act_envs"])
            self._send(session, {"type": p.ACTIONS, "actions": reply})

    def _episodes(self, session: _Session, message: dict[str, Any]) -> None:
        pieces = message.get("episodes")
        if not isinstance(pieces, list) or not pieces:
            raise p.ProtocolError(p.BAD_REQUEST, "episodes needs 'episodes', a non-empty list")
        parsed = [
            self._parse_piece(session, piece, f"episodes[{i}]") for i, piece in enumerate(pieces)
        ]
        obs = np.concatenate([piece[1][:-1] for piece in parsed])
        actions = np.concatenate([piece[2] for piece in parsed])
        logp_server, dist_inputs, values = self.policy.score(obs, actions)
        start, num_steps = 0, 0
        for episode, piece_obs, piece_actions, rewards, logp, terminated, truncated in parsed:
            key = (session.number, "episode", episode)
            if episode not in session.local_episodes:
                session.local_episodes.add(episode)
                self.store.start(key)
            length = len(rewards)
            rows = []
            for t in range(length):
                last = t == length - 1
                rows.append((
                    piece_obs[t], piece_actions[t], float(rewards[t]), terminated and last,
                    truncated and last, piece_obs[t + 1],
                    float(logp[t] if logp is not None else logp_server[start + t]),
                    dist_inputs[start + t], float(values[start + t]),
                ))  # fmt: skip
            ended = terminated or truncated
            self.store.add_rows(key, rows, ended)
            if ended:
                session.local_episodes.discard(episode)
            start += length
            num_steps += length
        self.counts["steps_from_local_clients"] += num_steps
        self._send(
            session,
            {"type": p.ACK, "num_steps": num_steps, "weights_version": self.policy.weights_version},
        )

    def _parse_piece(self, session: _Session, piece: Any, where: str) -> tuple:
        if not isinstance(piece, dict):
            raise p.ProtocolError(p.BAD_REQUEST, f"{where} must be a map")
        missing = [k for k in ("episode", "obs", "actions", "rewards") if k not in piece]
        if missing:
            raise p.ProtocolError(p.BAD_REQUEST, f"{where} lacks {missing}")
        episode = piece["episode"]
        if not isinstance(episode, int | str) or isinstance(episode, bool):
            raise p.ProtocolError(p.BAD_REQUEST, f"{where}.episode={episode!r}: an int or string")
        rewards = p.as_array(piece["rewards"], f"{where}.rewards", np.float32)
        if rewards.ndim != 1 or len(rewards) == 0:
            raise p.ProtocolError(p.BAD_REQUEST, f"{where}.rewards must be a non-empty list")
        if self.policy.check_observations and not np.isfinite(rewards).all():
            raise p.ProtocolError(p.BAD_REQUEST, f"{where}.rewards holds non-finite values")
        num_steps = len(rewards)
        obs_values = piece["obs"]
        if isinstance(obs_values, np.ndarray) and obs_values.ndim >= 1:
            obs_values = list(obs_values)
        if not isinstance(obs_values, list) or len(obs_values) != num_steps + 1:
            raise p.ProtocolError(
                p.BAD_REQUEST,
                f"{where}.obs must hold {num_steps + 1} observations (one more than its "
                f"{num_steps} rewards: the last is the observation after the last action)",
            )
        obs = self.policy.observations(obs_values, f"{where}.obs")
        actions = self.policy.module_actions(piece["actions"], num_steps, f"{where}.actions")
        logp = piece.get("action_logp")
        if logp is not None:
            logp = p.as_array(logp, f"{where}.action_logp", np.float32)
            if logp.shape != (num_steps,):
                raise p.ProtocolError(
                    p.BAD_REQUEST, f"{where}.action_logp needs {num_steps} values"
                )
        terminated, truncated = bool(piece.get("terminated")), bool(piece.get("truncated"))
        return episode, obs, actions, rewards, logp, terminated, truncated

    # ------------------------------------------------------------------- sockets
    def _send(self, session: _Session, message: dict[str, Any]) -> None:
        session.outbox += p.encode(message)
        if len(session.outbox) > MAX_UNSENT_BYTES:
            self._close(session, f"more than {MAX_UNSENT_BYTES} bytes of replies unread")

    def _flush(self, session: _Session) -> None:
        if session.sock not in self._sessions:
            return
        try:
            sent = session.sock.send(session.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            self._close(session, f"send failed ({error})")
            return
        del session.outbox[:sent]
        if not session.outbox and session.close_after_send:
            self._close(session, "closed after a fatal error")
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if session.outbox else 0)
        self._selector.modify(session.sock, events)

    def _fail(self, session: _Session, code: str, text: str, fatal: bool = False) -> None:
        self.counts[f"errors_{code}"] += 1
        logger.warning("External client %s: %s: %s%s", session.peer, code, text,
                       " (disconnecting it)" if fatal else "")  # fmt: skip
        self._send(session, p.error_message(code, text, fatal))
        if fatal:
            session.close_after_send = True
            session.inbox.clear()
            self._flush(session)

    def _close(self, session: _Session, why: str) -> None:
        if self._sessions.pop(session.sock, None) is None:
            return
        keys = session.keys()
        self.store.drop(keys)
        self.counts["disconnects"] += 1
        logger.info("External client %s left (%s); %d open episodes dropped.", session.peer, why,
                    len(keys))  # fmt: skip
        try:
            self._selector.unregister(session.sock)
        except (KeyError, ValueError):
            pass
        session.sock.close()
