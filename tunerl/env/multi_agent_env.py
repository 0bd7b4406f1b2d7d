"""The multi-agent env API (RLlib's `ray.rllib.env.multi_agent_env`), its checks, and
`make_multi_agent`.

A `MultiAgentEnv` returns dicts keyed by agent id: `reset()` gives `(obs, infos)`, `step(actions)`
gives `(obs, rewards, terminateds, truncateds, infos)`. Only the agents with an observation act
next; `agents` may change within an episode; `terminateds["__all__"]` (and
`truncateds["__all__"]`) says the whole episode ended. An agent that is done keeps its final
observation and reward: they come in the step that sets its flag.

The flags, as RLlib's: an agent's own `terminateds[agent]` / `truncateds[agent]` say how it
ended (a truncated agent is bootstrapped from its final observation). `terminateds["__all__"]`
is True when the episode is over; `truncateds["__all__"]` is True when it is over because
every agent was truncated (then both are True). The envs and wrappers here follow that rule.

`check_multi_agent_output` is what a runner calls on every reset/step result (cheap: set
lookups over the returned keys); `validate_spaces` checks an env once, at construction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from tunerl.env.registry import EnvContext

AgentID = Hashable
MultiAgentDict = dict

ALL_AGENTS = "__all__"
"""The key of `terminateds` / `truncateds` that says the whole episode ended."""


class MultiAgentEnvError(ValueError):
    """A multi-agent env that broke the dict API: the message names the env, the field and the
    agent."""


class MultiAgentEnv(gym.Env):
    """An env hosting several agents, each with its own observation and action space.

    Subclasses set `possible_agents` (every agent that may ever appear, fixed), `agents` (the
    ones active now) and the `observation_spaces` / `action_spaces` dicts, or override
    `get_observation_space` / `get_action_space`. `reset(*, seed=None, options=None)` returns
    `(obs, infos)`; calling `super().reset(seed=seed)` seeds `self.np_random`, as in Gymnasium.
    """

    observation_spaces: dict[AgentID, gym.Space] | None = None
    action_spaces: dict[AgentID, gym.Space] | None = None
    agents: list[AgentID] = []
    possible_agents: list[AgentID] = []
    # A Dict space keyed by agent, or one space every agent shares (RLlib's old fallback).
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None

    def __init__(self) -> None:
        super().__init__()
        # Own copies: the class-level defaults are shared lists.
        self.agents = list(self.agents)
        self.possible_agents = list(self.possible_agents) or list(self.agents)

    def step(
        self, action_dict: MultiAgentDict
    ) -> tuple[MultiAgentDict, MultiAgentDict, MultiAgentDict, MultiAgentDict, MultiAgentDict]:
        """Applies the actions of the agents that had an observation; returns `(obs, rewards,
        terminateds, truncateds, infos)` keyed by agent, with `"__all__"` in `terminateds` and
        `truncateds`."""
        raise NotImplementedError

    def get_observation_space(self, agent_id: AgentID) -> gym.Space:
        """The observation space of one agent: `observation_spaces[agent_id]`, else the entry
        of a Dict `observation_space`, else `observation_space` itself."""
        return _space_of(self, agent_id, "observation")

    def get_action_space(self, agent_id: AgentID) -> gym.Space:
        """The action space of one agent, with the same fallbacks as the observation space."""
        return _space_of(self, agent_id, "action")

    @property
    def num_agents(self) -> int:
        """How many agents are active now."""
        return len(self.agents)

    @property
    def max_num_agents(self) -> int:
        """How many agents may ever appear (`len(possible_agents)`)."""
        return len(self.possible_agents)


def _space_of(env: MultiAgentEnv, agent_id: AgentID, kind: str) -> gym.Space:
    spaces = getattr(env, f"{kind}_spaces", None)
    if spaces is not None:
        if agent_id in spaces:
            return spaces[agent_id]
        raise MultiAgentEnvError(
            f"{type(env).__name__}.{kind}_spaces has no entry for agent {agent_id!r}; it has "
            f"{list(spaces)}. Every agent the env returns needs an {kind} space."
        )
    space = getattr(env, f"{kind}_space", None)
    if isinstance(space, gym.spaces.Dict) and agent_id in space.spaces:
        return space.spaces[agent_id]
    if space is None:
        raise MultiAgentEnvError(
            f"{type(env).__name__} has no {kind} space for agent {agent_id!r}: set "
            f"{kind}_spaces (a dict keyed by agent id) or {kind}_space."
        )
    return space


def validate_spaces(env: MultiAgentEnv) -> None:
    """Checks once, when an env is built, that it names its possible agents and that each of
    them has an observation and an action space. Raises MultiAgentEnvError."""
    name = type(env).__name__
    if not isinstance(env, MultiAgentEnv):
        raise MultiAgentEnvError(
            f"{name} is not a tunerl.env.multi_agent_env.MultiAgentEnv; a multi-agent config "
            "needs one (wrap PettingZoo envs with tunerl.env.wrappers.pettingzoo_env)."
        )
    possible = list(env.possible_agents)
    if not possible:
        raise MultiAgentEnvError(
            f"{name}.possible_agents is empty: list every agent id the env may return."
        )
    if len(set(possible)) != len(possible):
        raise MultiAgentEnvError(f"{name}.possible_agents has duplicates: {possible}.")
    unknown = [agent for agent in env.agents if agent not in possible]
    if unknown:
        raise MultiAgentEnvError(
            f"{name}.agents has {unknown}, which are not in possible_agents {possible}."
        )
    for agent in possible:
        for kind, getter in (
            ("observation", env.get_observation_space),
            ("action", env.get_action_space),
        ):
            space = getter(agent)
            if not isinstance(space, gym.Space):
                raise MultiAgentEnvError(
                    f"{name}.get_{kind}_space({agent!r}) returned {space!r}, not a gymnasium Space."
                )


def _known(env: MultiAgentEnv, agent: AgentID, possible: Collection) -> bool:
    """An agent the env has spaces for: a possible agent, or one the env's space getters answer
    for (envs that generate agents as they go)."""
    if agent in possible:
        return True
    try:
        return isinstance(env.get_observation_space(agent), gym.Space) and isinstance(
            env.get_action_space(agent), gym.Space
        )
    except (KeyError, MultiAgentEnvError):
        return False


def check_multi_agent_output(
    env: MultiAgentEnv,
    where: str,
    obs: Any,
    rewards: Any = None,
    terminateds: Any = None,
    truncateds: Any = None,
    infos: Any = None,
    seen_agents: Collection[AgentID] | None = None,
) -> None:
    """Checks one `reset()` (`where="reset"`: pass obs and infos) or `step()` (`where="step"`:
    pass all five) result of `env`; raises MultiAgentEnvError naming the env, the dict and
    the agent. Checked: every return is a dict; `"__all__"` is in terminateds and truncateds;
    every agent with an observation has spaces; rewards, terminateds and truncateds name only
    agents with spaces, and, when `seen_agents` (the agents that had an observation earlier in
    this episode) is given, only those or agents observed in this result; a truncated agent
    has its final observation (to bootstrap from); an episode that goes on has an agent to act.
    """
    # Set operations over the keys on the way through; messages are built only on failure.
    step = where == "step"
    returned = (obs, rewards, terminateds, truncateds, infos) if step else (obs, infos)
    if not all(type(value) is dict for value in returned):
        _check_mappings(env, where, returned)
    possible = set(env.possible_agents)
    for agent in obs.keys() - possible:
        if not _known(env, agent, possible):
            raise MultiAgentEnvError(
                f"{_where(env, where)} returned an observation for agent {agent!r}, which has no "
                f"observation or action space: the known agents are {_listed(possible)}. Add "
                "it to possible_agents and to observation_spaces / action_spaces."
            )
    episode_over = False
    if step:
        for field, flags in (("terminateds", terminateds), ("truncateds", truncateds)):
            if ALL_AGENTS not in flags:
                raise MultiAgentEnvError(
                    f"{_where(env, where)} returned {field} without the key '__all__' (got "
                    f"keys {list(flags)}): a multi-agent env says whether the whole episode "
                    f"ended with {field}['__all__'] = True/False in every step."
                )
        episode_over = bool(terminateds[ALL_AGENTS] or truncateds[ALL_AGENTS])
        named = (rewards.keys() | terminateds.keys() | truncateds.keys()) - {ALL_AGENTS}
        if seen_agents is not None:
            for agent in (named - obs.keys()).difference(seen_agents):
                raise MultiAgentEnvError(
                    f"{_where(env, where)} returned {_field_of(agent, returned)}[{agent!r}], "
                    f"but agent {agent!r} has had no observation in this episode (seen: "
                    f"{_listed(set(seen_agents) | obs.keys())}): an agent gets rewards and "
                    "done flags only after it observed."
                )
        for agent in named - possible:
            if not _known(env, agent, possible):
                raise MultiAgentEnvError(
                    f"{_where(env, where)} returned {_field_of(agent, returned)}[{agent!r}] "
                    f"for an agent with no spaces: the known agents are {_listed(possible)}."
                )
        for agent, flag in truncateds.items():
            if flag and agent != ALL_AGENTS and agent not in obs:
                raise MultiAgentEnvError(
                    f"{_where(env, where)} set truncateds[{agent!r}] = True without a final "
                    f"observation for {agent!r}: a truncated agent's value is bootstrapped "
                    "from its last observation, so return it in the same step."
                )
    if not obs and not episode_over:
        raise MultiAgentEnvError(
            f"{_where(env, where)} returned no observation and the episode is not over: no "
            "agent can act next. Return an observation for at least one agent, or set "
            "'__all__' = True."
        )


_RESET_FIELDS = ("observations", "infos")
_STEP_FIELDS = ("observations", "rewards", "terminateds", "truncateds", "infos")


def _check_mappings(env: MultiAgentEnv, where: str, returned: tuple) -> None:
    fields = _STEP_FIELDS if len(returned) == 5 else _RESET_FIELDS
    for field, value in zip(fields, returned):
        if not isinstance(value, Mapping):
            raise MultiAgentEnvError(
                f"{_where(env, where)} returned {type(value).__name__} {_short(value)} as its "
                f"{field}; a multi-agent env returns ({', '.join(fields)}), each a dict keyed "
                "by agent id."
            )


def _where(env: MultiAgentEnv, where: str) -> str:
    return f"{type(env).__name__}.{where}()"


def _field_of(agent: AgentID, returned: tuple) -> str:
    """The first of rewards / terminateds / truncateds that names `agent`."""
    return next(f for f, d in zip(_STEP_FIELDS[1:4], returned[1:4]) if agent in d)


def _listed(agents: Collection) -> list:
    return sorted(agents, key=str)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


EnvCreator = Callable[[dict], gym.Env]


def make_multi_agent(env_name_or_creator: str | EnvCreator) -> type[MultiAgentEnv]:
    """A MultiAgentEnv class with `num_agents` independent copies of a single-agent env.

    `env_name_or_creator` is a Gymnasium id (the rest of `config` goes to `gym.make` as
    keyword arguments) or `creator(config)` returning a `gym.Env`. The class takes `config`
    with `num_agents` (default 1); agents are `0..num_agents-1`. An agent that is done stops
    acting and keeps its final observation and reward; `terminateds["__all__"]` is True when
    every copy is done, `truncateds["__all__"]` when every copy was truncated (as RLlib).
    `reset(seed=s)` seeds copy `i` with `s + i`, so the copies do not start alike (RLlib gives
    every copy the same seed).
    """

    class MultiEnv(MultiAgentEnv):
        def __init__(self, config: dict | None = None):
            super().__init__()
            # The rest of the config goes to every copy; an EnvContext keeps its indices.
            rest = {k: v for k, v in (config or {}).items() if k != "num_agents"}
            num_agents = (config or {}).get("num_agents", 1)
            if isinstance(config, EnvContext):
                rest = EnvContext(rest, config.worker_index, config.vector_index)
            if not isinstance(num_agents, int) or num_agents < 1:
                raise MultiAgentEnvError(
                    f"{type(self).__name__}: env_config['num_agents'] is {num_agents!r}; it "
                    "must be an int >= 1."
                )
            self.envs = [_make_one(env_name_or_creator, rest) for _ in range(num_agents)]
            self.possible_agents = list(range(num_agents))
            self.agents = list(self.possible_agents)
            self.observation_spaces = {i: e.observation_space for i, e in enumerate(self.envs)}
            self.action_spaces = {i: e.action_space for i, e in enumerate(self.envs)}
            self._terminated: set[int] = set()
            self._truncated: set[int] = set()

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            super().reset(seed=seed)
            self._terminated, self._truncated = set(), set()
            self.agents = list(self.possible_agents)
            obs, infos = {}, {}
            for i, env in enumerate(self.envs):
                copy_seed = None if seed is None else seed + i
                obs[i], infos[i] = env.reset(seed=copy_seed, options=options)
            return obs, infos

        def step(self, action_dict: MultiAgentDict):
            if not action_dict:
                raise MultiAgentEnvError(
                    f"{type(self).__name__}.step() got no action: the active agents are "
                    f"{self.agents}."
                )
            obs, rewards, terminateds, truncateds, infos = {}, {}, {}, {}, {}
            for i, action in action_dict.items():
                if i not in self.agents:
                    raise MultiAgentEnvError(
                        f"{type(self).__name__}.step() got an action for agent {i!r}, which "
                        f"is not active: the active agents are {self.agents}."
                    )
                obs[i], rewards[i], terminateds[i], truncateds[i], infos[i] = self.envs[i].step(
                    action
                )
                if terminateds[i]:
                    self._terminated.add(i)
                elif truncateds[i]:
                    self._truncated.add(i)
            self.agents = [i for i in self.agents if not (terminateds.get(i) or truncateds.get(i))]
            terminateds[ALL_AGENTS] = not self.agents
            truncateds[ALL_AGENTS] = len(self._truncated) == len(self.envs)
            return obs, rewards, terminateds, truncateds, infos

        def render(self):
            frames = [env.render() for env in self.envs]
            if any(frame is None for frame in frames):
                return None
            # Side by side when the frames are taller than wide, stacked otherwise.
            axis = 0 if frames[0].shape[1] > frames[0].shape[0] else 1
            return np.concatenate(frames, axis=axis)

        def close(self):
            for env in self.envs:
                env.close()

    label = env_name_or_creator if isinstance(env_name_or_creator, str) else "creator"
    MultiEnv.__name__ = MultiEnv.__qualname__ = f"MultiAgent({label})"
    return MultiEnv


def _make_one(env_name_or_creator: str | EnvCreator, config: dict) -> gym.Env:
    if isinstance(env_name_or_creator, str):
        try:
            return gym.make(env_name_or_creator, **config)
        except TypeError as error:
            raise MultiAgentEnvError(
                f"make_multi_agent({env_name_or_creator!r}) cannot make the env with the "
                f"env_config keys {sorted(config)}: {error}"
            ) from None
    env = env_name_or_creator(config)
    if not isinstance(env, gym.Env):
        raise MultiAgentEnvError(
            f"make_multi_agent's creator returned {type(env).__name__}, not a gymnasium.Env."
        )
    return env
