"""V-trace against a slow reference written from the paper's definition (nested sums), its
on-policy special case, clipping, truncation bootstrapping, and add_vtrace with a module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunerl import DefaultRLModule, SampleBatch
from tunerl.core import columns as c
from tunerl.core.postprocessing import compute_gae, trajectory_ends
from tunerl.core.vtrace import add_vtrace, vtrace

TERMINATED, TRUNCATED, FRAGMENT_END = "terminated", "truncated", "fragment_end"
# Two sub-envs' fragments, env-major as a runner writes them: an episode that began in an
# earlier fragment, terminations and truncations in mid-fragment, one-step episodes, and
# episodes that go on past the fragment.
PIECES = [
    (10, 7, 4, TERMINATED),
    (11, 0, 6, TRUNCATED),
    (12, 0, 1, TERMINATED),
    (13, 0, 5, FRAGMENT_END),
    (20, 3, 3, TRUNCATED),
    (21, 0, 7, TERMINATED),
    (22, 0, 1, TRUNCATED),
    (23, 0, 4, FRAGMENT_END),
]


def reference_vtrace(rows, gamma, clip_rho, clip_pg_rho):
    """The paper's definition (Espeholt et al. 2018, eq. 1), one piece at a time, in O(n^2):
    v_s = V(x_s) + sum_{t=s}^{end} (prod_{i=s}^{t-1} d_i c_i) rho_t (r_t + d_t V(x_{t+1}) - V(x_t))
    with rho_t = min(clip_rho, pi/mu), c_i = min(1, pi/mu), d_i = gamma (0 on termination),
    and V(x_{t+1}) = V(new_obs_t). pg_s = min(clip_pg_rho, pi/mu) (r_s + d_s v_{s+1} - V(x_s)),
    v_{s+1} = V(new_obs_s) at the piece's last row."""
    n = len(rows["rewards"])
    ratio = np.exp(rows["target_logp"] - rows["behaviour_logp"])
    d = gamma * (1.0 - rows["terminateds"])
    r, v, v_next = rows["rewards"], rows["values"], rows["new_obs_values"]
    vs, pg = np.zeros(n), np.zeros(n)
    start = 0
    for length in rows["piece_lengths"]:
        end = start + length - 1
        for s in range(start, end + 1):
            total = 0.0
            for t in range(s, end + 1):
                trace = 1.0
                for i in range(s, t):
                    trace *= d[i] * min(1.0, ratio[i])
                total += trace * min(clip_rho, ratio[t]) * (r[t] + d[t] * v_next[t] - v[t])
            vs[s] = v[s] + total
        for s in range(start, end + 1):
            following = vs[s + 1] if s < end else v_next[s]
            pg[s] = min(clip_pg_rho, ratio[s]) * (r[s] + d[s] * following - v[s])
        start = end + 1
    return vs, pg


def make_rows(rng: np.random.Generator, pieces=PIECES, logp_noise: float = 0.7) -> dict:
    """Rows of the pieces; inside a piece V(new_obs_t) is V(obs_{t+1}), at its last row a
    state the batch holds nowhere else. Target and behaviour log-probs differ by noise, so
    ratios fall on both sides of the clips."""
    out: dict[str, list] = {
        k: [] for k in ("rewards", "values", "new_obs_values", "terminateds", "truncateds")
    }
    out.update(eps_id=[], t=[], piece_lengths=[])
    for eps_id, first_t, length, kind in pieces:
        values = rng.normal(size=length + 1)
        out["rewards"] += list(rng.normal(size=length))
        out["values"] += list(values[:-1])
        out["new_obs_values"] += list(values[1:])
        out["terminateds"] += [False] * (length - 1) + [kind == TERMINATED]
        out["truncateds"] += [False] * (length - 1) + [kind == TRUNCATED]
        out["eps_id"] += [eps_id] * length
        out["t"] += list(range(first_t, first_t + length))
        out["piece_lengths"].append(length)
    rows = {k: np.asarray(v) for k, v in out.items()}
    n = len(rows["rewards"])
    rows["behaviour_logp"] = np.log(rng.uniform(0.05, 1.0, size=n))
    rows["target_logp"] = rows["behaviour_logp"] + rng.normal(scale=logp_noise, size=n)
    return rows


def ends_of(rows: dict) -> np.ndarray:
    return trajectory_ends(
        SampleBatch(
            {
                c.TERMINATEDS: rows["terminateds"],
                c.TRUNCATEDS: rows["truncateds"],
                c.EPS_ID: rows["eps_id"],
                c.T: rows["t"],
            }
        )
    )


def run_vtrace(rows, gamma, clip_rho=1.0, clip_pg_rho=1.0, bootstrap_values=None):
    ends = ends_of(rows)
    if bootstrap_values is None:
        # Only the ends' values are read: NaN elsewhere proves it.
        bootstrap_values = np.where(ends, rows["new_obs_values"], np.nan)
    return vtrace(
        rows["behaviour_logp"],
        rows["target_logp"],
        rows["rewards"],
        rows["values"],
        bootstrap_values,
        gamma * (1.0 - rows["terminateds"]),
        ends,
        clip_rho,
        clip_pg_rho,
    )


@pytest.mark.parametrize(
    "gamma, clip_rho, clip_pg_rho",
    [(0.99, 1.0, 1.0), (0.9, 2.0, 0.5), (1.0, np.inf, np.inf), (0.5, 0.7, 1.5)],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vtrace_matches_the_papers_definition(gamma, clip_rho, clip_pg_rho, seed):
    rows = make_rows(np.random.default_rng(seed))

    vs, pg = run_vtrace(rows, gamma, clip_rho, clip_pg_rho)

    expected_vs, expected_pg = reference_vtrace(rows, gamma, clip_rho, clip_pg_rho)
    np.testing.assert_allclose(vs, expected_vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pg, expected_pg, rtol=1e-5, atol=1e-5)
    assert vs.dtype == np.float32 and pg.dtype == np.float32


@pytest.mark.parametrize("gamma", [0.99, 0.9, 1.0])
def test_on_policy_without_clipping_gives_lambda_one_returns(gamma):
    """rho = 1 everywhere: vs are the n-step returns to the piece's end, bootstrapped where
    it was truncated or cut, and the advantages are GAE's with lambda = 1."""
    rows = make_rows(np.random.default_rng(3))
    rows["target_logp"] = rows["behaviour_logp"].copy()
    ends = ends_of(rows)

    vs, pg = run_vtrace(rows, gamma, np.inf, np.inf)

    advantages, returns = compute_gae(
        rows["rewards"],
        rows["values"],
        np.where(ends, rows["new_obs_values"], np.append(rows["values"][1:], 0.0)),
        rows["terminateds"],
        ends,
        gamma,
        1.0,
    )
    np.testing.assert_allclose(vs, returns, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pg, advantages, rtol=1e-5, atol=1e-5)


def test_on_policy_returns_by_hand():
    # One 3-step episode cut by the fragment end (V(new_obs) = 10) and one terminated
    # 2-step episode whose final observation's value (99) must be ignored.
    rows = {
        "rewards": np.array([1.0, 2.0, 3.0, 1.0, 1.0]),
        "values": np.array([0.5, 0.0, 0.0, 0.0, 0.0]),
        "new_obs_values": np.array([0.0, 0.0, 10.0, 0.0, 99.0]),
        "terminateds": np.array([False, False, False, False, True]),
        "truncateds": np.zeros(5, bool),
        "eps_id": np.array([1, 1, 1, 2, 2]),
        "t": np.array([4, 5, 6, 0, 1]),
        "behaviour_logp": np.log(np.full(5, 0.5)),
    }
    rows["target_logp"] = rows["behaviour_logp"]
    # The first episode's last row ends a piece because another episode follows it.
    vs, pg = run_vtrace(rows, 0.5, np.inf, np.inf)
    np.testing.assert_allclose(
        vs, [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10, 2 + 0.5 * 3 + 0.25 * 10, 3 + 5, 1.5, 1.0]
    )
    np.testing.assert_allclose(pg, vs - rows["values"])


def test_clipping_of_rho_the_trace_and_the_policy_gradient_ratio():
    # Two steps of one terminated episode, V = 0 everywhere, rewards 1, target/behaviour
    # ratios 4 (first step) and 3 (second).
    rows = {
        "rewards": np.array([1.0, 1.0]),
        "values": np.zeros(2),
        "new_obs_values": np.array([0.0, 0.0]),
        "terminateds": np.array([False, True]),
        "truncateds": np.zeros(2, bool),
        "eps_id": np.array([1, 1]),
        "t": np.array([0, 1]),
        "behaviour_logp": np.log(np.array([0.2, 0.25])),
        "target_logp": np.log(np.array([0.8, 0.75])),
    }
    vs, pg = run_vtrace(rows, 0.9, clip_rho=2.0, clip_pg_rho=1.5)
    # delta_1 = min(2, 3) * 1 = 2 -> vs_1 = 2; delta_0 = min(2, 4) * 1 = 2, the trace decays
    # by gamma * min(1, 4) = 0.9 -> vs_0 = 2 + 0.9 * 2.
    np.testing.assert_allclose(vs, [3.8, 2.0], rtol=1e-6)
    # pg_0 = min(1.5, 4) * (1 + 0.9 * vs_1); pg_1 = min(1.5, 3) * 1 (terminated).
    np.testing.assert_allclose(pg, [1.5 * 2.8, 1.5], rtol=1e-6)

    # Ratios below 1 are not clipped: the trace decays by gamma * rho.
    rows["target_logp"] = np.log(np.array([0.1, 0.125]))  # ratios 0.5, 0.5
    vs, pg = run_vtrace(rows, 0.9, clip_rho=2.0, clip_pg_rho=1.5)
    np.testing.assert_allclose(vs, [0.5 + 0.9 * 0.5 * 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(pg, [0.5 * (1 + 0.9 * 0.5), 0.5], rtol=1e-6)


def test_truncation_bootstraps_on_the_final_observation_and_termination_does_not():
    base = {
        "rewards": np.ones(3),
        "values": np.zeros(3),
        "new_obs_values": np.array([0.0, 0.0, 10.0]),
        "truncateds": np.zeros(3, bool),
        "eps_id": np.ones(3, int),
        "t": np.arange(3),
        "behaviour_logp": np.zeros(3),
        "target_logp": np.zeros(3),
    }
    truncated = {**base, "terminateds": np.zeros(3, bool), "truncateds": np.array([0, 0, 1])}
    terminated = {**base, "terminateds": np.array([False, False, True])}

    vs_truncated, _ = run_vtrace(truncated, 0.9)
    vs_terminated, _ = run_vtrace(terminated, 0.9)

    np.testing.assert_allclose(vs_truncated, [1 + 0.9 + 0.81 * 10, 1 + 0.9 * 10, 1 + 0.9 * 10])
    np.testing.assert_allclose(vs_terminated, [2.71, 1.9, 1.0])


def test_a_truncated_episode_does_not_leak_into_the_next_one_mid_fragment():
    rows = make_rows(np.random.default_rng(4), [(1, 0, 3, TRUNCATED), (2, 0, 3, FRAGMENT_END)])
    vs, _ = run_vtrace(rows, 0.99)
    changed = {**rows, "rewards": rows["rewards"].copy()}
    changed["rewards"][3:] += 100.0  # the second episode only

    vs_changed, _ = run_vtrace(changed, 0.99)

    np.testing.assert_array_equal(vs_changed[:3], vs[:3])
    assert (vs_changed[3:] > vs[3:]).all()


# ----------------------------------------------------------------------- add_vtrace
def test_add_vtrace_uses_the_modules_critic_and_reads_new_obs_only_where_it_bootstraps(
    discrete_module: DefaultRLModule,
):
    rng = np.random.default_rng(5)
    rows = make_rows(rng)
    n = len(rows["rewards"])
    ends = ends_of(rows)
    obs = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    new_obs = np.empty_like(obs)
    new_obs[:-1] = obs[1:]
    new_obs[ends] = rng.uniform(-1, 1, size=(int(ends.sum()), 3))
    with torch.no_grad():
        values = discrete_module.compute_values({c.OBS: torch.from_numpy(obs)}).numpy()
        new_obs_values = discrete_module.compute_values({c.OBS: torch.from_numpy(new_obs)}).numpy()
    bootstrap = ends & ~rows["terminateds"].astype(bool)
    poisoned = new_obs.copy()
    poisoned[~bootstrap] = np.nan
    batch = SampleBatch(
        {
            c.OBS: obs,
            c.NEW_OBS: poisoned,
            c.ACTION_LOGP: rows["behaviour_logp"].astype(np.float32),
            c.REWARDS: rows["rewards"].astype(np.float32),
            c.TERMINATEDS: rows["terminateds"],
            c.TRUNCATEDS: rows["truncateds"],
            c.EPS_ID: rows["eps_id"],
            c.T: rows["t"],
            # The behaviour critic's values must not be used: the learner's are.
            c.VF_PREDS: np.full(n, 1e6, np.float32),
        }
    )

    out = add_vtrace(batch, discrete_module, rows["target_logp"], 0.99, 1.0, 1.0)

    expected_vs, expected_pg = reference_vtrace(
        {**rows, "values": values, "new_obs_values": new_obs_values}, 0.99, 1.0, 1.0
    )
    assert out is batch
    np.testing.assert_allclose(out[c.VALUE_TARGETS], expected_vs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[c.ADVANTAGES], expected_pg, rtol=1e-4, atol=1e-5)
