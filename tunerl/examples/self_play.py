"""Self-play on tic-tac-toe (`pettingzoo.classic.tictactoe_v3`): PPO trains the module
"main" against frozen snapshots of itself ("main_v0", "main_v1", ...), which a callback
refreshes with main's weights whenever main beats them often enough.

    python -m tunerl.examples.self_play            # trains, then plays 1,000 games vs random

- Which side main plays is drawn per episode from `episode.id_` (`SelfPlayMapping`), so it
  learns to open and to answer; the other side is one of the snapshots.
- Only main is trained (`policies_to_train=["main"]`); a snapshot keeps the weights the
  callback gives it with `algo.set_weights`, since untrained modules are not synced back.
- The snapshots are a fixed pool of module ids declared up front and refreshed oldest first:
  tunerl has no API yet to add a module to a running algorithm (its learner and env runners
  build their modules once), so "adding" a snapshot refreshes the oldest slot in place. The
  first snapshot keeps main's initial (near-uniform) policy as an anchor: without it, main
  overfit to its latest selves and won or drew 87.0% of 1,000 games against a random
  player after 80k env steps; with it, 91.3% (seed 0).
- Tic-tac-toe observes `{"observation": board, "action_mask": legal moves}`; the default
  module masks the illegal moves' logits, so no game is lost to an illegal move.

`play_against_random` scores a module against a uniformly random legal player.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from tunerl.algorithms.ppo import PPOConfig
from tunerl.core import columns
from tunerl.core.callbacks import Callbacks
from tunerl.core.rl_module import RLModule
from tunerl.env.wrappers.pettingzoo_env import PettingZooEnv
from tunerl.policy.policy import PolicySpec

logger = logging.getLogger(__name__)

MAIN = "main"
PLAYERS = ("player_1", "player_2")
# The goal: the trained module wins or draws at least 90% of 1,000 games against a
# uniformly random legal player. The example and the learning test read it from here.
WIN_OR_DRAW_TARGET = 0.9
NUM_EVALUATION_GAMES = 1000
# The training budget that reaches it (seed 0), and the snapshot pool.
TRAIN_ENV_STEPS = 80_000
NUM_SNAPSHOTS = 3
# Result keys the callback adds.
WIN_RATE_KEY = "self_play/win_rate"
GAMES_KEY = "self_play/games"
REFRESHES_KEY = "self_play/num_snapshot_refreshes"


def snapshot_id(index: int) -> str:
    return f"{MAIN}_v{index}"


class TicTacToeEnv(PettingZooEnv):
    """`tictactoe_v3.env()` as a turn-based MultiAgentEnv (agents "player_1", "player_2")."""

    def __init__(self, config: Mapping | None = None):
        from pettingzoo.classic import tictactoe_v3

        del config
        super().__init__(tictactoe_v3.env())


class SelfPlayMapping:
    """`policy_mapping_fn`: in each episode main plays one side, chosen with equal chance
    from `episode.id_`, and one of `num_snapshots` snapshots the other (both agents of an
    episode see the same draw). Without an episode (spaces are looked up before any
    episode), the first player maps to main and the second to the first snapshot."""

    def __init__(self, num_snapshots: int):
        self.num_snapshots = num_snapshots

    def __call__(self, agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
        del kwargs
        if episode is None:
            return MAIN if agent_id == PLAYERS[0] else snapshot_id(0)
        draw = random.Random(episode.id_)
        main_side = draw.randrange(2)
        opponent = snapshot_id(draw.randrange(self.num_snapshots))
        return MAIN if agent_id == PLAYERS[main_side] else opponent


class SelfPlayCallback(Callbacks):
    """Counts main's games in each iteration (from the sampled batches: the reward of main's
    last step of a game is +1, 0 or -1) and, after an iteration in which main won at least
    `win_rate_to_refresh` of its games (and played at least `min_games`), copies main's
    weights into the oldest snapshot; the first one stays main's initial policy while
    `keep_first_snapshot`. Subclass to change these three settings.

    Adds `self_play/win_rate`, `self_play/games` (this iteration's) and
    `self_play/num_snapshot_refreshes` to each result."""

    win_rate_to_refresh = 0.75
    min_games = 100
    keep_first_snapshot = True

    def __init__(self) -> None:
        self.wins = self.games = self.refreshes = 0

    def on_algorithm_init(self, *, algorithm: Any, **kwargs: Any) -> None:
        # Every snapshot starts as main's initial (near-uniform) policy.
        self._refresh(algorithm, range(self._num_snapshots(algorithm)))
        self.refreshes = 0

    def on_checkpoint_loaded(self, *, algorithm: Any, **kwargs: Any) -> None:
        # The snapshots' weights come back with the checkpoint; the count starts anew.
        self.wins = self.games = 0

    def on_sample_end(self, *, algorithm: Any, samples: Any, **kwargs: Any) -> None:
        batch = samples.policy_batches.get(MAIN)
        if batch is None:
            return
        final = np.asarray(batch[columns.TERMINATEDS], dtype=bool)
        rewards = np.asarray(batch[columns.REWARDS])[final]
        self.games += int(final.sum())
        self.wins += int((rewards > 0).sum())

    def on_train_result(self, *, algorithm: Any, result: dict, **kwargs: Any) -> None:
        win_rate = self.wins / self.games if self.games else 0.0
        result[WIN_RATE_KEY] = win_rate
        result[GAMES_KEY] = self.games
        if self.games >= self.min_games and win_rate >= self.win_rate_to_refresh:
            first = 1 if self.keep_first_snapshot else 0
            slot = first + self.refreshes % (self._num_snapshots(algorithm) - first)
            self._refresh(algorithm, [slot])
            logger.info(
                "main won %.0f%% of %d games: snapshot %s refreshed",
                100 * win_rate,
                self.games,
                snapshot_id(slot),
            )
        result[REFRESHES_KEY] = self.refreshes
        self.wins = self.games = 0

    def _refresh(self, algorithm: Any, slots: Any) -> None:
        weights = algorithm.get_weights([MAIN])[MAIN]
        algorithm.set_weights({snapshot_id(slot): weights for slot in slots})
        self.refreshes += len(list(slots))

    @staticmethod
    def _num_snapshots(algorithm: Any) -> int:
        return sum(1 for module_id in algorithm.config.policies if module_id != MAIN)


def self_play_config(num_snapshots: int = NUM_SNAPSHOTS, seed: int = 0) -> PPOConfig:
    """PPO on TicTacToeEnv: main trained, `num_snapshots` frozen snapshots of it."""
    env = TicTacToeEnv()
    spec = PolicySpec(
        observation_space=env.get_observation_space(PLAYERS[0]),
        action_space=env.get_action_space(PLAYERS[0]),
    )
    env.close()
    policies = {MAIN: spec, **{snapshot_id(i): spec for i in range(num_snapshots)}}
    return (
        PPOConfig()
        .environment(TicTacToeEnv)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=8)
        .multi_agent(
            policies=policies,
            policy_mapping_fn=SelfPlayMapping(num_snapshots),
            policies_to_train=[MAIN],
        )
        .training(
            lr=2e-3,
            gamma=0.95,
            lambda_=0.95,
            train_batch_size_per_learner=2048,
            minibatch_size=256,
            num_epochs=6,
            entropy_coeff=0.01,
        )
        .callbacks(SelfPlayCallback)
        .debugging(seed=seed)
    )


def play_against_random(
    module: RLModule, num_games: int = NUM_EVALUATION_GAMES, seed: int = 0
) -> dict[str, int]:
    """Plays `num_games` of tic-tac-toe between `module` (greedy: `forward_inference`, the
    most likely legal move) and a player that picks uniformly among the legal moves; the
    module moves first in the even-numbered games. Returns `{"wins", "draws", "losses"}`
    from the module's side."""
    from pettingzoo.classic import tictactoe_v3

    rng = np.random.default_rng(seed)
    env = tictactoe_v3.env()
    dist_cls = module.get_action_dist_cls()
    counts = {"wins": 0, "draws": 0, "losses": 0}
    try:
        for game in range(num_games):
            env.reset(seed=seed + game)
            module_player = PLAYERS[game % 2]
            reward = 0.0
            for agent in env.agent_iter():
                # last() gives what the agent received since it last moved; summed: its return.
                obs, received, terminated, truncated, _ = env.last()
                if agent == module_player:
                    reward += float(received)
                if terminated or truncated:
                    action = None
                elif agent == module_player:
                    flat = gym.spaces.utils.flatten(env.observation_space(agent), obs)
                    batch = {columns.OBS: torch.as_tensor(flat[None], dtype=torch.float32)}
                    logits = module.forward_inference(batch)[columns.ACTION_DIST_INPUTS]
                    action = int(dist_cls(logits).deterministic_sample()[0])
                else:
                    action = int(rng.choice(np.flatnonzero(obs["action_mask"])))
                env.step(action)
            counts["wins" if reward > 0 else "losses" if reward < 0 else "draws"] += 1
    finally:
        env.close()
    return counts


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-steps", type=int, default=TRAIN_ENV_STEPS)
    parser.add_argument("--num-snapshots", type=int, default=NUM_SNAPSHOTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--games", type=int, default=NUM_EVALUATION_GAMES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    algo = self_play_config(args.num_snapshots, args.seed).build_algo()
    try:
        while True:
            result = algo.train()
            steps = result["num_env_steps_sampled_lifetime"]
            logger.info(
                "%7d env steps  main's win rate %.2f  snapshot refreshes %d",
                steps,
                result[WIN_RATE_KEY],
                result[REFRESHES_KEY],
            )
            if steps >= args.env_steps:
                break
        counts = play_against_random(algo.get_module(MAIN), args.games, seed=args.seed + 1)
    finally:
        algo.stop()
    share = (counts["wins"] + counts["draws"]) / args.games
    logger.info(
        "against a random legal player: %(wins)d wins, %(draws)d draws, %(losses)d losses",
        counts,
    )
    logger.info("won or drew %.1f%% (target %.0f%%)", 100 * share, 100 * WIN_OR_DRAW_TARGET)
    return counts


if __name__ == "__main__":
    main()
