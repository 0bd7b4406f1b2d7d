"""ExternalEnvRunner: an env runner whose env steps come from external clients over TCP.

Select it with `.env_runners(env_runner_cls=ExternalEnvRunner)` and give the spaces the
clients' simulator has, `.environment(observation_space=..., action_space=...,
env_config={"port": 5555})`: every algorithm then trains from the clients unchanged, with
`num_env_runners=0` (one server in the algorithm's process) or N remote runners (a server
each, on port + worker index, as RLlib numbers them). `sample()` returns the same
`MultiAgentBatch` as `EnvRunner.sample()`: finished episodes and pieces of running ones,
one `eps_id` per client episode. The wire protocol is docs/external_env_protocol.md.

env_config keys (all optional): `port` (default 0: a free port, see `address`), `host`
(default 127.0.0.1; give "0.0.0.0" to accept other machines), `token` (a shared secret every
client must send), `max_message_bytes`, `max_buffered_env_steps` (default: one sample's
steps, at least 1000; clients wait for replies while the store is that full).
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import torch

from tunerl.core.env_runner_group import EnvRunnerFailure
from tunerl.core.fields import ConfigError
from tunerl.core.rl_module import MultiRLModule, MultiRLModuleSpec
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch
from tunerl.env.external import protocol as p
from tunerl.env.external.episode_store import EpisodeStore
from tunerl.env.external.policy import ServerPolicy
from tunerl.env.external.server import ExternalEnvServer

logger = logging.getLogger(__name__)

# Episode ids are unique across runners: the runner's index sits in the high bits (as in
# EnvRunner).
_EPS_ID_STRIDE = 1 << 40
ENV_CONFIG_KEYS = ("port", "host", "token", "max_message_bytes", "max_buffered_env_steps")
MIN_BUFFERED_ENV_STEPS = 1000


def _options(env_config: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(env_config) - set(ENV_CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"ExternalEnvRunner: env_config keys {unknown} are unknown; it reads "
            f"{list(ENV_CONFIG_KEYS)}."
        )
    options = {
        "port": 0,
        "host": "127.0.0.1",
        "token": None,
        "max_message_bytes": p.DEFAULT_MAX_MESSAGE_BYTES,
        "max_buffered_env_steps": None,
        **env_config,
    }
    for name in ("port", "max_message_bytes"):
        value = options[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"ExternalEnvRunner: env_config[{name!r}]={value!r}: an int >= 0.")
    if not isinstance(options["host"], str):
        raise ConfigError(f"ExternalEnvRunner: env_config['host']={options['host']!r}: a string.")
    if options["token"] is not None and not isinstance(options["token"], str):
        raise ConfigError("ExternalEnvRunner: env_config['token'] must be a string or None.")
    return options


class ExternalEnvRunner:
    """A TCP server for external clients and a copy of the module; the public methods are
    those of `EnvRunner` (sample, get_metrics, get/set_weights, set_config, reset, ping,
    stop), so `EnvRunnerGroup` runs it locally or as Ray actors."""

    def __init__(
        self,
        config: Any,
        module_spec: MultiRLModuleSpec,
        worker_index: int = 0,
        seed: int | None = None,
        env_creator: Any = None,
        num_torch_threads: int | None = None,
    ):
        del env_creator  # the env runs in the clients
        if num_torch_threads is not None:
            torch.set_num_threads(num_torch_threads)
        self.config = config
        self.worker_index = worker_index
        options = _options(config.env_config)
        self._module = module_spec.build()
        self._module.eval()
        if len(self._module) != 1:
            raise ValueError(
                f"ExternalEnvRunner trains one module; the spec holds {self._module.keys()}."
            )
        (self.module_id,) = self._module.keys()
        policy_module = self._module[self.module_id]
        self.single_observation_space: gym.Space = policy_module.observation_space
        self.single_action_space: gym.Space = policy_module.action_space
        self.policy = ServerPolicy(
            policy_module,
            config.normalize_actions,
            config.clip_actions,
            not config.disable_env_checking,
            seed,
        )
        self.policy.explore = config.explore
        self.store = EpisodeStore(first_eps_id=worker_index * _EPS_ID_STRIDE)
        buffered = options["max_buffered_env_steps"]
        port = options["port"] + worker_index if options["port"] else 0
        try:
            self.server = ExternalEnvServer(
                self.policy,
                self.store,
                host=options["host"],
                port=port,
                token=options["token"],
                max_message_bytes=options["max_message_bytes"],
                max_buffered_env_steps=(lambda: buffered) if buffered else self._default_buffered,
            )
        except OSError as error:
            raise EnvRunnerFailure(
                f"ExternalEnvRunner {worker_index} cannot listen on {options['host']}:{port} "
                f"({error}). Runners listen on env_config['port'] + worker index; an "
                "evaluation group needs its own port or env: .evaluation(evaluation_config="
                "{'env_config': {'port': ...}})."
            ) from None
        self._finished_returns: list[float] = []
        self._finished_lengths: list[int] = []
        self._num_env_steps = 0

    def _default_buffered(self) -> int:
        return max(self.config.env_steps_per_sample(), MIN_BUFFERED_ENV_STEPS)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        return self.server.address

    # ------------------------------------------------------------------------ module
    @property
    def module(self) -> MultiRLModule:
        return self._module

    @module.setter
    def module(self, module: MultiRLModule) -> None:
        # The algorithm hands a local runner its learner's modules to act with, at no cost
        # (Algorithm._send_weights). Here the server thread acts while the learner trains,
        # so the runner keeps its own copy and takes the weights under the policy's lock.
        self.set_weights(module.get_state())

    def get_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        with self.policy.lock:
            return self._module.get_state()

    def set_weights(self, weights: dict[str, dict[str, torch.Tensor]]) -> None:
        if self.module_id in weights:
            self.policy.set_state(weights[self.module_id])

    def get_spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.single_observation_space, self.single_action_space

    def set_config(self, config: Any) -> None:
        self.config = config
        self.policy.explore = config.explore

    def reset(self, seed: int | None) -> None:
        """Reseeds action sampling; client episodes carry on (they are the clients')."""
        if seed is not None:
            self.policy.seed(seed)

    # ---------------------------------------------------------------------- sampling
    def sample(
        self,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool | None = None,
    ) -> MultiAgentBatch:
        """Every step the clients sent so far, once at least `num_timesteps` are in (default
        one rollout fragment), or exactly `num_episodes` finished episodes. Waits up to
        `sample_timeout_s`; then returns what is in, or raises if nothing is."""
        self.policy.explore = self.config.explore if explore is None else explore
        if num_episodes is None and num_timesteps is None:
            num_timesteps = self.config.env_steps_per_sample()
        timeout_s = self.config.sample_timeout_s
        if not self.store.wait_for(num_timesteps or 0, num_episodes, timeout_s):
            counts = self.store.snapshot_counts()
            if num_episodes is None:
                have = counts["steps_buffered"]
            else:
                have = counts["episodes_ended"] - counts["episodes_taken"]
            if have == 0:
                raise EnvRunnerFailure(
                    f"ExternalEnvRunner {self.worker_index}: no external client sent "
                    f"{'episodes' if num_episodes else 'env steps'} within sample_timeout_s="
                    f"{timeout_s:g} (listening on {self.address[0]}:{self.address[1]}, "
                    f"{self.server.num_clients} clients connected). Start a client (e.g. "
                    "python -m tunerl.examples.envs.external_cartpole_client --port "
                    f"{self.address[1]}), or raise .env_runners(sample_timeout_s=...)."
                )
            logger.warning(
                "ExternalEnvRunner %d: sample_timeout_s=%g passed with fewer steps or episodes "
                "than asked; returning those in.",
                self.worker_index,
                timeout_s,
            )
        taken = self.store.take(num_episodes)
        self.server.wake()
        self._finished_returns += taken.episode_returns
        self._finished_lengths += taken.episode_lengths
        self._num_env_steps += len(taken)
        batch = SampleBatch(taken.batch)
        return MultiAgentBatch({self.module_id: batch}, len(batch))

    def get_metrics(self) -> dict[str, Any]:
        """Episodes finished and env steps taken since the last call (of the steps sampled)."""
        metrics = {
            "episode_returns": self._finished_returns,
            "episode_lengths": self._finished_lengths,
            "num_env_steps": self._num_env_steps,
        }
        self._finished_returns, self._finished_lengths = [], []
        self._num_env_steps = 0
        return metrics

    def server_stats(self) -> dict[str, int]:
        """The server's counters (connections, errors by code, actions) and the store's
        (steps added, taken, dropped; episodes started, ended, taken, dropped)."""
        return {**self.server.stats(), **self.store.snapshot_counts()}

    def ping(self) -> bool:
        return True

    def stop(self) -> None:
        self.server.stop()
