"""Multi-agent offline data (issue 15, part 6), which RLlib's offline algorithms do not train
on: a multi-agent run records each module's rows with their `agent_id` and `module_id`; BC,
MARWIL and IQL train every module of a multi-agent config from them, each module on its own
rows (and MARWIL's returns per agent); a module absent from the data is refused by name."""

from __future__ import annotations

import logging
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tunerl import PPOConfig
from tunerl.algorithms.bc import BCConfig
from tunerl.algorithms.iql import IQLConfig
from tunerl.algorithms.marwil import MARWILConfig
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.examples.envs.classes.multi_agent import MultiAgentCartPole, MultiAgentPendulum
from tunerl.offline.offline_data import RETURNS, OfflineData, OfflineDataError

MODULES = ("p0", "p1")
TWO_AGENTS = {"num_agents": 2}
GAMMA = 0.9


def by_agent(agent_id, episode, **kwargs):
    """Agent i acts with module p{i}."""
    return f"p{agent_id}"


def record(folder: Path, env, num_env_steps: int = 512, iterations: int = 1) -> Path:
    """`num_env_steps` env steps per iteration of a PPO whose agent i acts with p{i}."""
    algo = (
        PPOConfig()
        .environment(env, env_config=TWO_AGENTS)
        .multi_agent(policies=set(MODULES), policy_mapping_fn=by_agent)
        .training(train_batch_size_per_learner=num_env_steps, minibatch_size=num_env_steps)
        .env_runners(num_envs_per_env_runner=1)
        .offline_data(output=str(folder), output_max_rows_per_file=200)
        .debugging(seed=0)
        .build_algo()
    )
    try:
        for _ in range(iterations):
            algo.train()
    finally:
        algo.stop()
    return folder


@pytest.fixture(scope="module")
def cartpole_data(tmp_path_factory) -> Path:
    return record(tmp_path_factory.mktemp("multi_agent_cartpole"), MultiAgentCartPole)


def offline_config(config_class, data: Path, env=MultiAgentCartPole, modules=MODULES, **training):
    return (
        config_class()
        .environment(env, env_config=TWO_AGENTS)
        .multi_agent(policies=set(modules), policy_mapping_fn=by_agent)
        .training(**{"train_batch_size_per_learner": 64, **training})
        .reporting(min_train_timesteps_per_iteration=128)
        .offline_data(input_=str(data))
        .debugging(seed=0)
    )


def file_rows(data: Path, module_id: str) -> pa.Table:
    """The rows of `module_id`, in the reader's file order."""
    tables = [pq.read_table(path) for path in sorted(data.rglob("*.parquet"))]
    table = pa.concat_tables(tables)
    return table.filter(pc.equal(table[c.MODULE_ID], module_id))


def weights(algo) -> dict:
    return {
        mid: {k: v.clone() for k, v in algo.get_module(mid).get_state().items()} for mid in MODULES
    }


def assert_both_modules_trained(algo) -> dict:
    before = weights(algo)
    result = algo.train()
    assert set(result[m.LEARNER_RESULTS]) == set(MODULES)
    assert result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] == 0
    assert result[m.NUM_ENV_STEPS_TRAINED_LIFETIME] == 128
    after = weights(algo)
    for mid in MODULES:
        assert any(not after[mid][k].equal(before[mid][k]) for k in before[mid]), mid
    return result


# ---------------------------------------------------------------------------- recording
def test_a_multi_agent_run_records_each_module_with_its_agent_ids(cartpole_data):
    files = sorted(cartpole_data.rglob("*.parquet"))
    assert len(files) >= 4  # two modules, more than 256 rows each, 200 rows a file
    held = {}
    for path in files:
        table = pq.read_table(path)
        (module_id,) = set(table[c.MODULE_ID].to_pylist())  # one module per file
        agent_ids = set(table[c.AGENT_ID].to_pylist())
        assert agent_ids == {module_id[1]}  # agent i -> p{i}
        assert module_id in path.name
        held[module_id] = held.get(module_id, 0) + table.num_rows
    # Each agent acts until its own episode ends (in 512 env steps, about 480 times).
    assert set(held) == set(MODULES) and all(rows > 256 for rows in held.values())


# ---------------------------------------------------------------------------- training
def test_bc_trains_both_modules_each_on_its_own_rows(cartpole_data, build):
    algo = build(offline_config(BCConfig, cartpole_data))
    assert_both_modules_trained(algo)
    batch = algo.data.sample_batch(300)
    assert len(batch) == 300 and batch.agent_steps() == 600
    for mid in MODULES:
        recorded = np.asarray(file_rows(cartpole_data, mid)[c.OBS].to_pylist(), np.float32)
        own = {row.tobytes() for row in recorded}
        assert all(row.tobytes() in own for row in batch[mid][c.OBS]), mid
        assert algo.data.data[mid].num_rows == len(recorded)


def test_marwil_returns_are_each_agents_own(cartpole_data, build):
    algo = build(offline_config(MARWILConfig, cartpole_data, gamma=GAMMA))
    assert_both_modules_trained(algo)
    for mid in MODULES:
        rows = file_rows(cartpole_data, mid)
        expected = hand_returns(
            rows[c.EPS_ID].to_pylist(),
            rows[c.AGENT_ID].to_pylist(),
            rows[c.T].to_pylist(),
            rows[c.REWARDS].to_pylist(),
        )
        got = algo.data.data[mid].all_rows()[RETURNS]
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def hand_returns(eps, agents, steps, rewards) -> np.ndarray:
    """Per row, the discounted rewards to the end of its (eps_id, agent_id) episode."""
    out = np.zeros(len(rewards))
    episodes: dict = {}
    for i, key in enumerate(zip(eps, agents, strict=True)):
        episodes.setdefault(key, []).append(i)
    for rows in episodes.values():
        running = 0.0
        for i in sorted(rows, key=lambda row: steps[row], reverse=True):
            running = rewards[i] + GAMMA * running
            out[i] = running
    return out


def test_agents_sharing_an_eps_id_have_their_own_returns(tmp_path):
    # RLlib's files: every agent of an episode has its episode's eps_id. Agent "0" has 3
    # steps, agent "1" 5, all of module "shared" (rewards 1, gamma 1: steps to the end).
    agents = ["0"] * 3 + ["1"] * 5
    steps = [0, 1, 2, 0, 1, 2, 3, 4]
    n = len(agents)
    obs = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(4 * n, np.float32)), 4)
    table = pa.table(
        {
            c.EPS_ID: ["e"] * n,
            c.AGENT_ID: agents,
            c.MODULE_ID: ["shared"] * n,
            c.OBS: obs,
            c.ACTIONS: pa.array(np.zeros(n, np.int64)),
            c.REWARDS: pa.array(np.ones(n, np.float32)),
            c.NEW_OBS: obs,
            c.TERMINATEDS: [False, False, True, False, False, False, False, True],
            c.T: steps,
        }
    )
    pq.write_table(table, tmp_path / "shared.parquet")
    space = gym.spaces.Box(-1, 1, (4,))
    data = OfflineData(
        tmp_path, space, gym.spaces.Discrete(2), module_id="shared", returns_gamma=1.0
    )
    assert data.all_rows()[RETURNS].tolist() == [3, 2, 1, 5, 4, 3, 2, 1]


def test_iql_trains_both_modules_on_multi_agent_pendulum(tmp_path, build):
    data = record(tmp_path, MultiAgentPendulum, num_env_steps=400)
    algo = build(offline_config(IQLConfig, data, env=MultiAgentPendulum))
    assert_both_modules_trained(algo)
    batch = algo.data.sample_batch(64)
    for mid in MODULES:
        assert batch[mid][c.ACTIONS].shape == (64, 1)
        recorded = np.asarray(file_rows(data, mid)[c.OBS].to_pylist(), np.float32)
        own = {row.tobytes() for row in recorded}
        assert all(row.tobytes() in own for row in batch[mid][c.OBS]), mid


# ---------------------------------------------------------------------- modules vs data
def test_a_module_absent_from_the_data_is_refused_by_name(cartpole_data):
    config = offline_config(BCConfig, cartpole_data, modules=("p0", "p2")).multi_agent(
        policy_mapping_fn=lambda agent_id, episode, **kwargs: "p0" if agent_id == 0 else "p2"
    )
    with pytest.raises(
        OfflineDataError, match=r"no row of the module 'p2'.*modules \['p0', 'p1'\]"
    ):
        config.build_algo()


def test_rows_of_modules_the_config_lacks_are_ignored_with_a_warning(cartpole_data, build, caplog):
    config = offline_config(BCConfig, cartpole_data, modules=("p0",)).multi_agent(
        policy_mapping_fn=lambda agent_id, episode, **kwargs: "p0"
    )
    with caplog.at_level(logging.WARNING, logger="tunerl.offline.offline_data"):
        algo = build(config)
    assert "['p1']" in caplog.text and "not trained on" in caplog.text
    assert algo.data.data["p0"].num_rows == file_rows(cartpole_data, "p0").num_rows


def test_a_single_agent_config_reads_every_row(cartpole_data, build):
    algo = build(
        BCConfig()
        .environment(MultiAgentCartPole, env_config=TWO_AGENTS)
        .training(train_batch_size_per_learner=64)
        .reporting(min_train_timesteps_per_iteration=64)
        .offline_data(input_=str(cartpole_data))
    )
    total = sum(pq.read_metadata(path).num_rows for path in cartpole_data.rglob("*.parquet"))
    assert algo.data.data[c.DEFAULT_MODULE_ID].num_rows == total
    assert set(algo.train()[m.LEARNER_RESULTS]) == {c.DEFAULT_MODULE_ID}


def test_reseeding_repeats_every_modules_batches(cartpole_data, build):
    data = build(offline_config(BCConfig, cartpole_data)).data
    batches = []
    for _ in range(2):
        data.reseed(7)
        batches.append(data.sample_batch(50))
    for mid in MODULES:
        assert np.array_equal(batches[0][mid][c.OBS], batches[1][mid][c.OBS])
    assert not np.array_equal(batches[0]["p0"][c.OBS], batches[0]["p1"][c.OBS])


def complete_episode_returns(table: pa.Table) -> list[float]:
    """The undiscounted return of every (eps_id, agent_id) whose rows end its episode."""
    returns: dict[tuple, float] = {}
    ended: set[tuple] = set()
    for row in table.select(
        ["eps_id", "agent_id", "rewards", "terminateds", "truncateds"]
    ).to_pylist():
        key = (row["eps_id"], row["agent_id"])
        returns[key] = returns.get(key, 0.0) + row["rewards"]
        if row["terminateds"] or row["truncateds"]:
            ended.add(key)
    return [value for key, value in returns.items() if key in ended]


def test_offline_evaluation_estimates_each_module_on_its_own_episodes(cartpole_data, build):
    config = offline_config(BCConfig, cartpole_data).evaluation(
        offline_evaluation_interval=1,
        offline_evaluation_type=["wis", "fqe"],
        offline_evaluation_fqe_updates=20,
    )
    offline = build(config).train()[m.EVALUATION_RESULTS][m.OFFLINE_EVAL_RUNNER_RESULTS]
    assert set(offline) == set(MODULES)
    for mid in MODULES:
        expected = complete_episode_returns(file_rows(cartpole_data, mid))
        assert offline[mid]["num_episodes"] == len(expected) > 0
        assert offline[mid]["behavior_episode_return_mean"] == pytest.approx(np.mean(expected))
        assert np.isfinite(offline[mid]["wis"][m.EPISODE_RETURN_MEAN])
        assert np.isfinite(offline[mid]["fqe"][m.EPISODE_RETURN_MEAN])
        assert offline[mid][m.EPISODE_RETURN_MEAN] == offline[mid]["wis"][m.EPISODE_RETURN_MEAN]


# ----------------------------------------------------------------------------- learning
def test_bc_from_an_expert_recording_beats_the_untrained_policy(tmp_path, build):
    """A PPO trained for six iterations (about 12k env steps, 5 s) records ten greedy
    episodes through its evaluation runners; BC on them is compared with itself untrained,
    both evaluated stochastically (a random network's greedy policy can balance CartPole by
    chance). Measured: untrained 51, after 3 iterations 152 (seed 1; seed 2: 39, 156; sums over
    agents)."""
    folder = tmp_path / "expert"
    expert = build(
        PPOConfig()
        .environment(MultiAgentCartPole, env_config=TWO_AGENTS)
        .multi_agent(policies=set(MODULES), policy_mapping_fn=by_agent)
        .env_runners(num_envs_per_env_runner=8)
        # ppo_multi_agent_cartpole.yaml's settings, with 8 sub-envs
        .training(lr=0.002, gamma=0.98, lambda_=0.9, train_batch_size_per_learner=2048)
        .training(minibatch_size=512, num_epochs=10, grad_clip=0.5)
        .evaluation(
            evaluation_duration=10, evaluation_config={"explore": False, "output": str(folder)}
        )
        .debugging(seed=1)
    )
    for _ in range(6):
        expert.train()
    expert.evaluate()
    expert.stop()
    bc = build(
        offline_config(BCConfig, folder, lr=1e-3, train_batch_size_per_learner=256)
        .reporting(min_train_timesteps_per_iteration=256 * 20)
        .evaluation(evaluation_duration=10)
        .debugging(seed=1)
    )
    untrained = bc.evaluate()[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
    for _ in range(3):
        bc.train()
    trained = bc.evaluate()[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
    assert trained > 2 * untrained, (untrained, trained)
