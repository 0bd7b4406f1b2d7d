"""Turns `.environment(env=...)` into a Gymnasium vector env.

`env` may be a Gymnasium id ("CartPole-v1"), a name given to `register_env`, or a `gym.Env`
subclass (constructed with `env_config`, as RLlib does). Gymnasium ids with a natively
vectorized implementation (CartPole) use it: one numpy step for all sub-envs instead of a
Python loop over them.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import gymnasium as gym

EnvCreator = Callable[[dict], gym.Env]

_CREATORS: dict[str, EnvCreator] = {}


class EnvError(ValueError):
    """An environment that cannot be made, or that broke its own contract while stepping."""


class EnvContext(dict):
    """`env_config` as a custom env's creator receives it, plus which runner and which
    sub-env it is building (RLlib's EnvContext)."""

    def __init__(self, env_config: dict | None, worker_index: int = 0, vector_index: int = 0):
        super().__init__(env_config or {})
        self.worker_index = worker_index
        self.vector_index = vector_index


def register_env(name: str, creator: EnvCreator) -> None:
    """Makes `name` usable as `.environment(env=name)`: `creator(env_config)` returns a
    `gym.Env`. Also registered with Ray Tune, so Tune trials in other processes find it."""
    if not callable(creator):
        raise TypeError(f"register_env({name!r}, ...) needs a callable creator, got {creator!r}.")
    _CREATORS[name] = creator
    from ray.tune.registry import register_env as tune_register_env

    tune_register_env(name, creator)


def reregister_envs() -> None:
    """Writes every `register_env` name into Tune's registry again (after a new ray.init())."""
    if not _CREATORS:
        return
    from ray.tune.registry import register_env as tune_register_env

    for name, creator in _CREATORS.items():
        tune_register_env(name, creator)


def _multi_agent_cartpole(config: dict) -> gym.Env:
    from tunerl.examples.envs.classes.multi_agent import MultiAgentCartPole

    return MultiAgentCartPole(config)


def _multi_agent_pendulum(config: dict) -> gym.Env:
    from tunerl.examples.envs.classes.multi_agent import MultiAgentPendulum

    return MultiAgentPendulum(config)


def _action_mask_env(config: dict) -> gym.Env:
    from tunerl.examples.envs.classes.action_mask_env import ActionMaskEnv

    return ActionMaskEnv(config)


def _simple_spread(config: dict) -> gym.Env:
    from mpe2 import simple_spread_v3

    from tunerl.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    return ParallelPettingZooEnv(simple_spread_v3.parallel_env(**config))


def _tictactoe(config: dict) -> gym.Env:
    from pettingzoo.classic import tictactoe_v3

    from tunerl.env.wrappers.pettingzoo_env import PettingZooEnv

    return PettingZooEnv(tictactoe_v3.env(**config))


# Names tunerl knows without a register_env call, so that experiment files, the CLI and
# checkpoints can name these example envs (each creator is tunerl's own code: a name is
# looked up here, never imported). The PettingZoo ones need the `multi_agent` extra.
BUILTIN_ENVS: dict[str, EnvCreator] = {
    "ActionMaskEnv": _action_mask_env,
    "MultiAgentCartPole": _multi_agent_cartpole,
    "MultiAgentPendulum": _multi_agent_pendulum,
    "pettingzoo/simple_spread_v3": _simple_spread,
    "pettingzoo/tictactoe_v3": _tictactoe,
}


def _lookup_registered(name: str) -> EnvCreator | None:
    if name in _CREATORS:
        return _CREATORS[name]
    if name in BUILTIN_ENVS:
        return BUILTIN_ENVS[name]
    from ray.tune.registry import ENV_CREATOR, _global_registry

    try:
        if _global_registry.contains(ENV_CREATOR, name):
            return _global_registry.get(ENV_CREATOR, name)
    except Exception:  # noqa: BLE001 - Ray's registry is optional here; fall through to the error
        return None
    return None


def resolve_env_creator(env: Any) -> EnvCreator | None:
    """A creator for a registered name or an Env subclass; None for a Gymnasium id. Raises
    EnvError for anything else, naming the closest known ids."""
    if isinstance(env, type) and issubclass(env, gym.Env):
        takes_config = len(inspect.signature(env).parameters) > 0
        return (lambda config: env(config)) if takes_config else (lambda config: env())
    if isinstance(env, str):
        creator = _lookup_registered(env)
        if creator is not None:
            return creator
        if env in gym.registry:
            return None
        known = sorted(set(gym.registry) | set(_CREATORS) | set(BUILTIN_ENVS))
        close = difflib.get_close_matches(env, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise EnvError(
            f"Unknown env {env!r}: it is neither a Gymnasium id nor a name given to "
            f"tunerl.register_env().{hint}"
        )
    if callable(env):
        return env
    raise EnvError(
        f"env={env!r} is not usable: pass a Gymnasium id, a name given to register_env(), or a "
        "gymnasium.Env subclass."
    )


def env_from_checkpoint(value: Any, where: str) -> str | None:
    """The `env` of a config read from a checkpoint: only a Gymnasium id or a name given to
    `register_env` in this process comes back. A class path or anything else is refused,
    never imported or called (with `env_config` it could run any command)."""
    from tunerl.core.checkpoint_io import CheckpointError

    if value is None:
        return None
    name = value.get("__class__") if isinstance(value, dict) else value
    if isinstance(name, str) and (_lookup_registered(name) is not None or name in gym.registry):
        return name
    if isinstance(value, dict):
        raise CheckpointError(
            f"{where} names the class {name!r}; a checkpoint's env comes back only as a "
            "Gymnasium id or a name given to tunerl.register_env() in this process, so it was "
            f"not loaded. If you trust it: tunerl.register_env({name!r}, YourEnvClass) before "
            "loading."
        )
    raise CheckpointError(
        f"{where} is {value!r}, which is neither a Gymnasium id nor a name given to "
        "tunerl.register_env() in this process; a checkpoint's env comes back only as one of "
        "those. Register it first: tunerl.register_env(name, creator)."
    )


def make_env(
    env: Any,
    env_config: dict | None,
    worker_index: int = 0,
    vector_index: int = 0,
    creator: EnvCreator | None = None,
) -> gym.Env:
    """Builds one copy of `env` (a MultiAgentEnv, or a single-agent env not vectorized)."""
    env_config = dict(env_config or {})
    creator = creator or resolve_env_creator(env)
    if creator is None:
        try:
            return gym.make(env, **env_config)
        except TypeError as error:
            raise EnvError(f"Cannot make {env!r} with env_config={env_config}: {error}") from None
    made = creator(EnvContext(env_config, worker_index, vector_index))
    if not isinstance(made, gym.Env):
        raise EnvError(f"The creator of env {env!r} returned {made!r}, not a gym.Env.")
    return made


def make_vector_env(
    env: Any,
    env_config: dict | None,
    num_envs: int,
    worker_index: int = 0,
    creator: EnvCreator | None = None,
) -> gym.vector.VectorEnv:
    """Builds `num_envs` copies of `env` as one vector env (next-step autoreset)."""
    env_config = dict(env_config or {})
    creator = creator or resolve_env_creator(env)
    if creator is None:
        spec = gym.spec(env)
        mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
        try:
            return gym.make_vec(env, num_envs=num_envs, vectorization_mode=mode, **env_config)
        except TypeError as error:
            raise EnvError(f"Cannot make {env!r} with env_config={env_config}: {error}") from None

    def make_one(vector_index: int) -> Callable[[], gym.Env]:
        def build() -> gym.Env:
            made = creator(EnvContext(env_config, worker_index, vector_index))
            if not isinstance(made, gym.Env):
                raise EnvError(f"The creator of env {env!r} returned {made!r}, not a gym.Env.")
            return made

        return build

    return gym.vector.SyncVectorEnv([make_one(i) for i in range(num_envs)])
