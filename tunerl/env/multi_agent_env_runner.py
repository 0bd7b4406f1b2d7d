"""MultiAgentEnvRunner: steps `num_envs_per_env_runner` MultiAgentEnvs with a copy of the
modules and returns MultiAgentBatches keyed by module id.

Every agent's steps are its own trajectory, mapped to one module by `policy_mapping_fn` when
the agent first appears in an episode (RLlib's rule). Only agents with an observation act
(turn-based games, agents that appear late or leave early); a transition is closed when the
agent next receives an observation or is done, with the rewards it received in between
summed into it. An agent that is terminated or truncated keeps its final observation and
reward; when the episode ends (`"__all__"`) without them, its last observation stands in for
the final one. Each agent trajectory has its own `eps_id` (as each agent of an RLlib
MultiAgentEpisode has its own SingleAgentEpisode), so GAE, V-trace and n-step returns run on
each agent's own steps unchanged; `agent_id` names the agent.

Actions are computed once per module per step, for all envs and agents it serves at once.
For modules with `uses_global_state` (a centralised critic, MAPPO) the rows also hold the
env's global state before and after the step (`state`, `new_state`; see
`tunerl.core.rl_module.central_critic`), and `state` is passed to the module when it acts.

With `offline_data(output=...)` what `sample()` returns is also recorded, one writer per
module: a file holds one module's rows (its `module_id` column one value, its columns one
shape, its metadata that module's spaces), with each row's `agent_id`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from tunerl.core import columns
from tunerl.core.distributions import sample_with_logp
from tunerl.core.env_runner import EnvActions
from tunerl.core.multi_agent import map_agent_to_module
from tunerl.core.rl_module import MultiRLModuleSpec, flattened_by_env_runner
from tunerl.core.rl_module.central_critic import GlobalState, uses_global_state
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch
from tunerl.env.multi_agent_env import MultiAgentEnv, check_multi_agent_output
from tunerl.env.registry import EnvContext, EnvCreator, EnvError, make_env
from tunerl.offline.output_writer import OutputWriter

logger = logging.getLogger(__name__)

# Ids are unique across runners: the runner's index sits in the high bits.
_ID_STRIDE = 1 << 40
_ALL = "__all__"
_ROW_COLUMNS = (
    columns.OBS,
    columns.ACTIONS,
    columns.REWARDS,
    columns.TERMINATEDS,
    columns.TRUNCATEDS,
    columns.NEW_OBS,
    columns.ACTION_LOGP,
    columns.ACTION_DIST_INPUTS,
    columns.VF_PREDS,
    columns.EPS_ID,
    columns.T,
    columns.AGENT_ID,
)
# Rows of modules that use the global state (central_critic) also hold these.
_STATE_COLUMNS = (columns.STATE, columns.NEW_STATE)


class AgentSpaces:
    """How one agent's observations and actions cross between env and module: observations
    flattened (Dict, Tuple) and typed as the module reads them, module actions mapped to the
    env's space (`EnvActions`)."""

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, config: Any):
        self.obs_space = obs_space
        self.flatten = flattened_by_env_runner(obs_space)
        self.dtype = (
            np.float32
            if self.flatten or isinstance(obs_space, gym.spaces.Box | gym.spaces.MultiBinary)
            else np.int64
        )
        self.actions = EnvActions(action_space, config.normalize_actions, config.clip_actions)

    def observation(self, obs: Any) -> np.ndarray:
        if self.flatten:
            return gym.spaces.utils.flatten(self.obs_space, obs).astype(np.float32)
        return np.asarray(obs, dtype=self.dtype)

    def env_action(self, action: np.ndarray) -> Any:
        return self.actions(action[None])[0]


class Episode:
    """One running multi-agent episode: what `policy_mapping_fn` receives as `episode`
    (`id_`, `env_index`, `length`, `agent_ids`, `module_for(agent_id)`)."""

    def __init__(self, id_: int, env_index: int):
        self.id_ = id_
        self.env_index = env_index
        self.length = 0  # env steps
        self.agent_returns: dict[Any, float] = defaultdict(float)
        self.modules: dict[Any, str] = {}
        self.trajectories: dict[Any, _Trajectory] = {}
        # The observations of the agents that act next: {agent_id: module-ready obs}.
        self.obs: dict[Any, np.ndarray] = {}
        # The global state now, when a module uses it (central_critic.GlobalState).
        self.state: np.ndarray | None = None

    @property
    def agent_ids(self) -> list:
        return list(self.modules)

    def module_for(self, agent_id: Any) -> str:
        return self.modules[agent_id]


class _Trajectory:
    """One agent's steps in one episode: completed rows, and the step it acted in that waits
    for its next observation (`pending`)."""

    __slots__ = ("agent_id", "module_id", "eps_id", "rows", "pending", "t", "last_obs", "done")

    def __init__(self, agent_id: Any, module_id: str, eps_id: int):
        self.agent_id, self.module_id, self.eps_id = agent_id, module_id, eps_id
        self.rows: list[dict[str, Any]] = []
        self.pending: dict[str, Any] | None = None
        self.t = 0
        self.last_obs: np.ndarray | None = None
        self.done = False

    def close(self, new_obs: np.ndarray, terminated: bool, truncated: bool) -> None:
        row = self.pending
        self.pending = None
        row[columns.NEW_OBS] = new_obs
        row[columns.TERMINATEDS] = terminated
        row[columns.TRUNCATEDS] = truncated
        self.rows.append(row)


class MultiAgentEnvRunner:
    """`num_envs_per_env_runner` MultiAgentEnvs and a copy of the MultiRLModule; runs in the
    algorithm's process or as a Ray actor, with the same public methods as `EnvRunner`."""

    def __init__(
        self,
        config: Any,
        module_spec: MultiRLModuleSpec,
        worker_index: int = 0,
        seed: int | None = None,
        env_creator: EnvCreator | None = None,
        num_torch_threads: int | None = None,
    ):
        if num_torch_threads is not None:
            torch.set_num_threads(num_torch_threads)
        self.config = config
        self.worker_index = worker_index
        self.num_envs = config.num_envs_per_env_runner
        self._env_creator = env_creator
        self._num_restarts = 0
        self.envs = [self._make_env(env_creator, i) for i in range(self.num_envs)]
        self.module = module_spec.build()
        self.module.eval()
        self.generator = torch.Generator()
        self._dist_cls = {mid: module.get_action_dist_cls() for mid, module in self.module.items()}
        self._check_env = not config.disable_env_checking
        # Global state (MAPPO): tracked per env only when a module asks for it.
        self._state_modules = {mid for mid, mod in self.module.items() if uses_global_state(mod)}
        self._global_states = (
            [GlobalState(env) for env in self.envs] if self._state_modules else None
        )
        self._spaces: dict[Any, AgentSpaces] = {}
        self._next_id = worker_index * _ID_STRIDE
        self._seed = seed
        self._episodes: list[Episode] | None = None
        # Episodes that ended in this sample() call, their rows not collected yet.
        self._finished: list[Episode] = []
        self._new_metrics()
        # offline_data(output=...): {module_id: its writer}, empty without an output.
        self.output_writers = {
            module_id: OutputWriter.from_config(
                config, spec.observation_space, spec.action_space, worker_index, module_id
            )
            for module_id, spec in module_spec.module_specs.items()
            if config.output is not None
        }

    def _make_env(self, env_creator: EnvCreator | None, vector_index: int) -> MultiAgentEnv:
        config = self.config
        env = make_env(config.env, config.env_config, self.worker_index, vector_index, env_creator)
        if not isinstance(env, MultiAgentEnv):
            raise EnvError(
                f"Env {config.env!r} made a {type(env).__name__}, not a MultiAgentEnv, but this "
                "config is multi-agent (.multi_agent(policies=...)); wrap it "
                "(tunerl.env.wrappers.pettingzoo_env, make_multi_agent) or drop the policies."
            )
        return env

    def _agent_spaces(self, env: MultiAgentEnv, agent_id: Any) -> AgentSpaces:
        spaces = self._spaces.get(agent_id)
        if spaces is None:
            obs_space = env.get_observation_space(agent_id)
            action_space = env.get_action_space(agent_id)
            spaces = self._spaces[agent_id] = AgentSpaces(obs_space, action_space, self.config)
        return spaces

    # ------------------------------------------------------------------------ state
    def reset(self, seed: int | None) -> None:
        """Starts fresh episodes at the next `sample()`, seeding envs and action sampling."""
        self._seed = seed
        self._episodes = None
        self._finished = []

    def set_config(self, config: Any) -> None:
        """Takes a new config for fields that need no new env (explore, fragment length)."""
        self.config = config

    @property
    def policy(self):
        """The module when there is one (as `EnvRunner.policy`)."""
        if len(self.module) != 1:
            raise AttributeError(f"This runner acts with several modules: {self.module.keys()}.")
        return self.module.values()[0]

    def get_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return self.module.get_state()

    def set_weights(self, weights: dict[str, dict[str, torch.Tensor]]) -> None:
        """Loads `{module_id: weights}`; modules not named keep theirs."""
        self.module.set_state(weights)

    def get_metrics(self) -> dict[str, Any]:
        """Episodes finished and steps taken since the last call: the single-agent keys
        (`episode_returns` summed over agents) plus per-agent and per-module returns and
        agent and module steps."""
        metrics = self._metrics
        self._new_metrics()
        return metrics

    def _new_metrics(self) -> None:
        self._metrics: dict[str, Any] = {
            "episode_returns": [],
            "episode_lengths": [],
            "num_env_steps": 0,
            "agent_episode_returns": [],
            "module_episode_returns": [],
            "num_agent_steps": 0,
            "num_module_steps": defaultdict(int),
        }

    def ping(self) -> bool:
        return True

    def stop(self) -> None:
        for writer in self.output_writers.values():
            writer.close()
        for env in self.envs:
            env.close()

    @property
    def num_sub_env_restarts(self) -> int:
        """Envs recreated after raising (restart_failed_sub_environments)."""
        return self._num_restarts

    def _recreate(self, env_index: int, error: Exception) -> None:
        """Builds env `env_index` again after its step() raised, when
        `restart_failed_sub_environments` allows it (at most max_num_env_runner_restarts
        times); otherwise raises the env's error."""
        config = self.config
        if (
            not config.restart_failed_sub_environments
            or self._num_restarts >= config.max_num_env_runner_restarts
        ):
            raise error
        logger.error(
            "Env %d of env runner %d (%r) raised %s: %s; recreating it "
            "(restart_failed_sub_environments=True).",
            env_index,
            self.worker_index,
            config.env,
            type(error).__name__,
            error,
        )
        try:
            self.envs[env_index].close()
        except Exception:  # noqa: BLE001 - the broken env may not close cleanly; it is dropped
            logger.debug("Closing the failed env raised too.", exc_info=True)
        self.envs[env_index] = self._make_env(self._env_creator, env_index)
        self._num_restarts += 1

    # --------------------------------------------------------------------- sampling
    def sample(
        self,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool | None = None,
    ) -> MultiAgentBatch:
        """Steps the envs until `num_timesteps` steps are collected (env steps, or agent
        steps with `count_steps_by="agent_steps"`; episodes carry over to the next call), or
        until exactly `num_episodes` fresh episodes have finished."""
        explore = self.config.explore if explore is None else explore
        if num_episodes is not None:
            batch = self._sample_episodes(num_episodes, explore)
        else:
            batch = self._sample_timesteps(num_timesteps, explore)
        for module_id, writer in self.output_writers.items():
            if module_id in batch:
                writer.write(MultiAgentBatch({module_id: batch[module_id]}, len(batch)))
        return batch

    def _sample_timesteps(self, num_timesteps: int | None, explore: bool) -> MultiAgentBatch:
        if num_timesteps is None:
            num_timesteps = self.config.env_steps_per_sample()
        if self._episodes is None:
            self._episodes = [self._start_episode(i) for i in range(self.num_envs)]
        by_agent_steps = self.config.count_steps_by == "agent_steps"
        env_steps = agent_steps = 0
        while (agent_steps if by_agent_steps else env_steps) < num_timesteps:
            rows_before = self._metrics["num_agent_steps"]
            env_steps += self._step_all(self._episodes, explore, keep_going=True)
            agent_steps += self._metrics["num_agent_steps"] - rows_before
        finished, self._finished = self._finished, []
        return self._collect_rows(finished + self._episodes, env_steps)

    def _sample_episodes(self, num_episodes: int, explore: bool) -> MultiAgentBatch:
        """Exactly `num_episodes` fresh episodes (each env keeps starting episodes until
        enough were started, so short episodes are not favoured)."""
        episodes = [self._start_episode(i) for i in range(min(num_episodes, self.num_envs))]
        started, finished, env_steps = len(episodes), [], 0
        rows: list[MultiAgentBatch] = []
        while episodes:
            env_steps += self._step_all(episodes, explore, keep_going=False, finished=finished)
            for done in finished:
                rows.append(self._collect_rows([done], 0))
                index = episodes.index(done)
                if started < num_episodes:
                    episodes[index] = self._start_episode(done.env_index)
                    started += 1
                else:
                    del episodes[index]
            finished.clear()
        # The envs are mid-episode or reset: the next timesteps sample starts fresh.
        self._episodes = None
        batch = MultiAgentBatch.concat_samples(rows) if rows else MultiAgentBatch({}, 0)
        batch.env_steps = env_steps
        return batch

    def _start_episode(self, env_index: int) -> Episode:
        env = self.envs[env_index]
        if self._seed is not None:
            self.generator.manual_seed(self._seed)
            # Each env its own seed, as a vector env seeds its sub-envs seed, seed + 1, ...
            obs, infos = env.reset(seed=self._seed + env_index)
            if env_index == self.num_envs - 1:
                self._seed = None
        else:
            obs, infos = env.reset()
        if self._check_env:
            check_multi_agent_output(env, "reset", obs, infos=infos)
        episode = Episode(self._next_id, env_index)
        self._next_id += 1
        if self._global_states is not None:
            episode.state = self._global_states[env_index].reset(obs)
        for agent_id, agent_obs in obs.items():
            self._add_agent(episode, env, agent_id)
            episode.obs[agent_id] = self._observation(env, agent_id, agent_obs)
        return episode

    def _add_agent(self, episode: Episode, env: MultiAgentEnv, agent_id: Any) -> _Trajectory:
        module_id = map_agent_to_module(self.config, agent_id, episode, self.module.keys())
        episode.modules[agent_id] = module_id
        trajectory = _Trajectory(agent_id, module_id, self._next_id)
        self._next_id += 1
        episode.trajectories[agent_id] = trajectory
        episode.agent_returns[agent_id] += 0.0
        self._agent_spaces(env, agent_id)
        return trajectory

    def _observation(self, env: MultiAgentEnv, agent_id: Any, obs: Any) -> np.ndarray:
        spaces = self._agent_spaces(env, agent_id)
        if self._check_env and not spaces.obs_space.contains(obs):
            raise EnvError(
                f"Env {self.config.env!r} returned an observation for agent {agent_id!r} "
                f"outside its observation space {spaces.obs_space}: {obs!r}. Fix the env or "
                "its observation_spaces, or set .environment(disable_env_checking=True)."
            )
        return spaces.observation(obs)

    def _act(self, episodes: list[Episode], explore: bool) -> dict[int, dict[Any, Any]]:
        """Actions of every agent that has an observation, one forward pass per module;
        records each as the agent's pending transition. Returns {env_index: action_dict}."""
        by_module: dict[str, list[tuple[Episode, Any]]] = defaultdict(list)
        for episode in episodes:
            for agent_id in episode.obs:
                by_module[episode.modules[agent_id]].append((episode, agent_id))
        action_dicts: dict[int, dict[Any, Any]] = {episode.env_index: {} for episode in episodes}
        for module_id, acting in by_module.items():
            module = self.module[module_id]
            obs = np.stack([episode.obs[agent_id] for episode, agent_id in acting])
            states = None
            if module_id in self._state_modules:
                states = np.stack([episode.state for episode, _ in acting])
            with torch.inference_mode():
                batch = {columns.OBS: torch.from_numpy(obs)}
                if states is not None:
                    batch[columns.STATE] = torch.from_numpy(states)
                if explore:
                    out = module.forward_exploration(batch)
                else:
                    out = module.forward_inference(batch)
                dist_inputs = out[columns.ACTION_DIST_INPUTS]
                dist = self._dist_cls[module_id](dist_inputs)
                if explore:
                    actions, logp = sample_with_logp(dist, self.generator)
                else:
                    actions = dist.deterministic_sample()
                    logp = dist.logp(actions)
            actions, logp, dist_inputs = actions.numpy(), logp.numpy(), dist_inputs.numpy()
            vf = out.get(columns.VF_PREDS)
            vf = vf.numpy() if vf is not None else np.zeros(len(acting), np.float32)
            for i, (episode, agent_id) in enumerate(acting):
                trajectory = episode.trajectories[agent_id]
                trajectory.pending = {
                    columns.OBS: obs[i],
                    columns.ACTIONS: actions[i],
                    columns.REWARDS: 0.0,
                    columns.ACTION_LOGP: logp[i],
                    columns.ACTION_DIST_INPUTS: dist_inputs[i],
                    columns.VF_PREDS: vf[i],
                    columns.EPS_ID: trajectory.eps_id,
                    columns.T: trajectory.t,
                    columns.AGENT_ID: str(agent_id),
                }
                if states is not None:
                    trajectory.pending[columns.STATE] = states[i]
                trajectory.last_obs = obs[i]
                trajectory.t += 1
                spaces = self._spaces[agent_id]
                action_dicts[episode.env_index][agent_id] = spaces.env_action(actions[i])
        return action_dicts

    def _step_all(
        self,
        episodes: list[Episode],
        explore: bool,
        keep_going: bool,
        finished: list[Episode] | None = None,
    ) -> int:
        """One step of every env in `episodes`; returns the env steps taken (a step that
        raised and had its env recreated is none). A finished episode is restarted in place
        (`keep_going`) or appended to `finished`."""
        action_dicts = self._act(episodes, explore)
        taken = 0
        for position, episode in enumerate(episodes):
            env = self.envs[episode.env_index]
            try:
                result = env.step(action_dicts[episode.env_index])
            except Exception as error:  # noqa: BLE001 - recreated, or raised as it is
                self._recreate(episode.env_index, error)
                # The lost episode's completed rows are kept as a trajectory piece that ends
                # there (bootstrapped, like a fragment end); it is not counted as an episode.
                self._finished.append(episode)
                episodes[position] = self._start_episode(episode.env_index)
                continue
            taken += 1
            if self._check_env:
                check_multi_agent_output(env, "step", *result)
            if self._record_step(episode, env, *result):
                if keep_going:
                    self._finished.append(episode)
                    episodes[position] = self._start_episode(episode.env_index)
                elif finished is not None:
                    finished.append(episode)
        self._metrics["num_env_steps"] += taken
        return taken

    def _record_step(
        self, episode: Episode, env: MultiAgentEnv, obs, rewards, terminateds, truncateds, infos
    ) -> bool:
        """Books one env step into the episode's trajectories; True when it ended."""
        del infos
        episode.length += 1
        trajectories = episode.trajectories
        if self._global_states is not None:
            # Every transition closed in this step ends in the state after it.
            tracker = self._global_states[episode.env_index]
            episode.state = tracker.step(obs, terminateds, truncateds)
            for trajectory in trajectories.values():
                if trajectory.pending is not None and columns.STATE in trajectory.pending:
                    trajectory.pending[columns.NEW_STATE] = episode.state
        for agent_id, reward in rewards.items():
            reward = float(reward)
            if self._check_env and not np.isfinite(reward):
                raise EnvError(
                    f"Env {self.config.env!r} returned a non-finite reward {reward} for agent "
                    f"{agent_id!r}."
                )
            episode.agent_returns[agent_id] += reward
            trajectory = trajectories.get(agent_id)
            if trajectory is not None and trajectory.pending is not None:
                trajectory.pending[columns.REWARDS] += reward
        episode_over = bool(terminateds.get(_ALL, False) or truncateds.get(_ALL, False))
        episode.obs = {}
        for agent_id, agent_obs in obs.items():
            trajectory = trajectories.get(agent_id) or self._add_agent(episode, env, agent_id)
            if trajectory.done:
                continue
            new_obs = self._observation(env, agent_id, agent_obs)
            terminated, truncated = _agent_done(agent_id, terminateds, truncateds, episode_over)
            if trajectory.pending is not None:
                self._close(trajectory, new_obs, terminated, truncated)
            if terminated or truncated:
                trajectory.done = True
            else:
                episode.obs[agent_id] = new_obs
                trajectory.last_obs = new_obs
        # Agents done in this step without an observation (or when the episode ended): the
        # observation they last acted on stands in for the final one.
        for agent_id, trajectory in trajectories.items():
            if trajectory.done or agent_id in episode.obs:
                continue
            terminated, truncated = _agent_done(agent_id, terminateds, truncateds, episode_over)
            if terminated or truncated:
                if trajectory.pending is not None:
                    self._close(trajectory, trajectory.last_obs, terminated, truncated)
                trajectory.done = True
        if episode_over:
            self._finish_episode(episode)
        return episode_over

    def _close(self, trajectory: _Trajectory, new_obs, terminated: bool, truncated: bool) -> None:
        trajectory.close(new_obs, terminated, truncated)
        self._metrics["num_agent_steps"] += 1
        self._metrics["num_module_steps"][trajectory.module_id] += 1

    def _finish_episode(self, episode: Episode) -> None:
        metrics = self._metrics
        metrics["episode_returns"].append(float(sum(episode.agent_returns.values())))
        metrics["episode_lengths"].append(episode.length)
        metrics["agent_episode_returns"].append(
            {str(agent_id): value for agent_id, value in episode.agent_returns.items()}
        )
        per_module: dict[str, float] = defaultdict(float)
        for agent_id, module_id in episode.modules.items():
            per_module[module_id] += episode.agent_returns.get(agent_id, 0.0)
        metrics["module_episode_returns"].append(dict(per_module))

    def _collect_rows(self, episodes: list[Episode], env_steps: int) -> MultiAgentBatch:
        """The completed rows of every trajectory, one module batch each (every agent's
        rows together and in time order); finished trajectories are dropped after this."""
        per_module: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for episode in episodes:
            for trajectory in list(episode.trajectories.values()):
                if trajectory.rows:
                    per_module[trajectory.module_id] += trajectory.rows
                    trajectory.rows = []
        return MultiAgentBatch(
            {module_id: _stack(rows) for module_id, rows in per_module.items()}, env_steps
        )


def _agent_done(
    agent_id: Any, terminateds: dict, truncateds: dict, episode_over: bool
) -> tuple[bool, bool]:
    """(terminated, truncated) of one agent after a step: its own flags, else the episode's
    `"__all__"`; an agent still running when the episode ends is truncated (its return goes
    on beyond the data, so it is bootstrapped)."""
    terminated = bool(terminateds.get(agent_id, terminateds.get(_ALL, False)))
    truncated = not terminated and bool(truncateds.get(agent_id, False) or episode_over)
    return terminated, truncated


def _stack(rows: list[dict[str, Any]]) -> SampleBatch:
    keys = (*_ROW_COLUMNS, *_STATE_COLUMNS) if columns.STATE in rows[0] else _ROW_COLUMNS
    batch = {key: np.stack([row[key] for row in rows]) for key in keys}
    batch[columns.REWARDS] = batch[columns.REWARDS].astype(np.float32)
    return SampleBatch(batch)


def make_runner_class(config: Any, env_creator: EnvCreator | None) -> Callable[..., Any]:
    """The runner class for `config.env`: MultiAgentEnvRunner for a MultiAgentEnv, else the
    single-agent EnvRunner."""
    from tunerl.core.env_runner import EnvRunner

    probe = make_env(config.env, config.env_config, 0, 0, env_creator)
    try:
        return MultiAgentEnvRunner if isinstance(probe, MultiAgentEnv) else EnvRunner
    finally:
        probe.close()


__all__ = ["AgentSpaces", "EnvContext", "Episode", "MultiAgentEnvRunner", "make_runner_class"]
