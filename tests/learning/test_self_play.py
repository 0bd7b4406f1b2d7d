"""Self-play on tic-tac-toe (tunerl.examples.self_play): the module trained against frozen
snapshots of itself wins or draws the share of 1,000 games against a random legal player
that the example names (`WIN_OR_DRAW_TARGET`, the issue's goal).

The experiments/ format cannot hold this run (a policy mapping and a callback are code, and
the target is measured after training, not read from a result), so the budget and target
live in the example, which `python -m tunerl.examples.self_play` runs the same way."""

import pytest

from tunerl.examples import self_play


@pytest.mark.slow
def test_self_play_beats_a_random_player():
    algo = self_play.self_play_config(num_snapshots=self_play.NUM_SNAPSHOTS, seed=0).build_algo()
    try:
        refreshes = 0
        while True:
            result = algo.train()
            refreshes = result[self_play.REFRESHES_KEY]
            if result["num_env_steps_sampled_lifetime"] >= self_play.TRAIN_ENV_STEPS:
                break
        module = algo.get_module(self_play.MAIN)
        snapshot = algo.get_weights([self_play.snapshot_id(0)])[self_play.snapshot_id(0)]
    finally:
        algo.stop()
    counts = self_play.play_against_random(module, self_play.NUM_EVALUATION_GAMES, seed=1)
    share = (counts["wins"] + counts["draws"]) / self_play.NUM_EVALUATION_GAMES
    # The callback did refresh snapshots, and a snapshot is a copy of main at some point,
    # not main itself (it stayed frozen after its last refresh).
    assert refreshes >= 1
    assert any(
        not (weights == snapshot[name]).all() for name, weights in module.get_state().items()
    )
    assert share >= self_play.WIN_OR_DRAW_TARGET, (
        f"won or drew {share:.1%} of {self_play.NUM_EVALUATION_GAMES} games against a random "
        f"player ({counts}) after {self_play.TRAIN_ENV_STEPS} env steps; the target is "
        f"{self_play.WIN_OR_DRAW_TARGET:.0%}"
    )


# ------------------------------------------------------------------ fast: the pieces
class _Episode:
    def __init__(self, id_):
        self.id_ = id_


def test_mapping_alternates_sides_and_spreads_over_snapshots():
    mapping = self_play.SelfPlayMapping(num_snapshots=3)
    sides, opponents = [], set()
    for id_ in range(0, 3000, 3):  # the runner's episode ids step by 1 + agents per episode
        episode = _Episode(id_)
        first, second = (mapping(player, episode) for player in self_play.PLAYERS)
        assert (first == self_play.MAIN) != (second == self_play.MAIN)
        sides.append(first == self_play.MAIN)
        opponents.add(second if first == self_play.MAIN else first)
    assert 0.45 < sum(sides) / len(sides) < 0.55
    assert opponents == {self_play.snapshot_id(i) for i in range(3)}
    assert mapping(self_play.PLAYERS[0]) == self_play.MAIN  # no episode: spaces lookup


def test_play_against_random_counts_every_game():
    env = self_play.TicTacToeEnv()
    from tunerl.core.rl_module import DefaultRLModule

    module = DefaultRLModule(
        env.get_observation_space(self_play.PLAYERS[0]),
        env.get_action_space(self_play.PLAYERS[0]),
    )
    env.close()
    counts = self_play.play_against_random(module, num_games=60, seed=0)
    assert sum(counts.values()) == 60
    assert counts == self_play.play_against_random(module, num_games=60, seed=0)


class _RefreshEveryIteration(self_play.SelfPlayCallback):
    win_rate_to_refresh = 0.0
    min_games = 1
    keep_first_snapshot = False


def test_the_callback_copies_main_into_the_oldest_snapshot_which_then_stays_frozen():
    config = (
        self_play.self_play_config(num_snapshots=2, seed=0)
        .training(train_batch_size_per_learner=512, minibatch_size=128, num_epochs=2)
        .callbacks(_RefreshEveryIteration)
    )
    algo = config.build_algo()
    try:
        v0, v1 = self_play.snapshot_id(0), self_play.snapshot_id(1)
        start = algo.get_weights([self_play.MAIN, v0, v1])
        for name, value in start[self_play.MAIN].items():  # all start as main's weights
            assert (value == start[v0][name]).all() and (value == start[v1][name]).all()
        first = algo.train()
        after_first = algo.get_weights([self_play.MAIN, v0, v1])
        assert first[self_play.GAMES_KEY] > 0 and first[self_play.REFRESHES_KEY] == 1
        second = algo.train()
        after_second = algo.get_weights([self_play.MAIN, v0, v1])
    finally:
        algo.stop()
    assert second[self_play.REFRESHES_KEY] == 2
    name = next(iter(start[self_play.MAIN]))
    # v0 took main's weights after the first iteration and kept them through the second.
    assert (after_first[v0][name] == after_first[self_play.MAIN][name]).all()
    assert (after_second[v0][name] == after_first[self_play.MAIN][name]).all()
    assert not (after_first[self_play.MAIN][name] == start[self_play.MAIN][name]).all()
    # v1 was the oldest after that: refreshed in the second iteration, frozen in the first.
    assert (after_first[v1][name] == start[v1][name]).all()
    assert (after_second[v1][name] == after_second[self_play.MAIN][name]).all()


class _KeepTheAnchor(_RefreshEveryIteration):
    keep_first_snapshot = True


def test_the_first_snapshot_stays_the_initial_policy_as_an_anchor():
    config = (
        self_play.self_play_config(num_snapshots=2, seed=0)
        .training(train_batch_size_per_learner=512, minibatch_size=128, num_epochs=2)
        .callbacks(_KeepTheAnchor)
    )
    algo = config.build_algo()
    try:
        v0, v1 = self_play.snapshot_id(0), self_play.snapshot_id(1)
        start = algo.get_weights([v0])
        for _ in range(2):
            algo.train()
        end = algo.get_weights([self_play.MAIN, v0, v1])
    finally:
        algo.stop()
    for name, value in start[v0].items():
        assert (end[v0][name] == value).all()
    name = next(iter(start[v0]))
    assert (end[v1][name] == end[self_play.MAIN][name]).all()
