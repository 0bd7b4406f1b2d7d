"""A real multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head node
and a worker node on loopback, two CPUs each): a trial's env runners spread over both nodes
with `placement_strategy="SPREAD"`, every runner inside the trial's placement group with the
resources it asked for; and a sweep whose trials land on different nodes, each with its
runner beside it ("PACK"). This module starts its own cluster and leaves no Ray running
behind it."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import ray
import ray.cloudpickle
from ray import tune
from ray.cluster_utils import Cluster

from tunerl import PPO

# The trial actors unpickle the Trainable below; they cannot import this module by name.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

CPUS_PER_NODE = 2


def _where(runner) -> dict:
    context = ray.get_runtime_context()
    return {
        "node": context.get_node_id(),
        "placement_group": context.get_placement_group_id(),
        "resources": context.get_assigned_resources(),
        "num_envs": runner.env.num_envs,
    }


class WhereAmIPPO(PPO):
    """PPO that reports where it and each of its env runners run."""

    def step(self) -> dict:
        result = super().step()
        context = ray.get_runtime_context()
        result["trial_node"] = context.get_node_id()
        result["trial_placement_group"] = context.get_placement_group_id()
        # By runner, as a dict: Tune's loggers take nested dicts, not lists of them.
        where = self.env_runner_group.foreach_env_runner(_where)
        result["runners"] = {str(index): runner for index, runner in enumerate(where, 1)}
        return result


@contextmanager
def ray_address_file_kept() -> Iterator[None]:
    """Cluster() records its address as "the latest Ray on this machine", where any plain
    ray.init() (another test session, another user) would connect, and its shutdown deletes
    the record; put back what was there before. This module connects by explicit address."""
    address_file = Path(ray._private.utils.get_ray_address_file(None))
    previous = address_file.read_text() if address_file.exists() else None
    try:
        yield
    finally:
        if previous is None:
            address_file.unlink(missing_ok=True)
        else:
            address_file.write_text(previous)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if ray.is_initialized():  # a Ray another module left connected is not this cluster
        ray.shutdown()
    with ray_address_file_kept():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": CPUS_PER_NODE, "include_dashboard": False},
        )
    try:
        with ray_address_file_kept():
            cluster.add_node(num_cpus=CPUS_PER_NODE)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address)
        yield cluster
    finally:
        with ray_address_file_kept():
            ray.shutdown()
            cluster.shutdown()


def wait_until_all_cpus_are_free(deadline_s: float = 120.0) -> None:
    """A finished trial's placement group is removed asynchronously; a trial placed before
    that would find half-full nodes, which no placement strategy can help."""
    total = CPUS_PER_NODE * 2
    end = time.monotonic() + deadline_s
    while ray.available_resources().get("CPU", 0) < total and time.monotonic() < end:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == total


def run(tmp_path, param_space) -> tune.ResultGrid:
    wait_until_all_cpus_are_free()
    tuner = tune.Tuner(
        WhereAmIPPO,
        param_space=param_space,
        run_config=tune.RunConfig(
            stop={"training_iteration": 1}, storage_path=str(tmp_path), verbose=0
        ),
    )
    results = tuner.fit()
    assert results.errors == []
    return results


def test_the_resource_request_reserves_every_runner_with_its_cpus_and_gpus(tiny_config):
    config = (
        tiny_config()
        .env_runners(num_env_runners=2, num_cpus_per_env_runner=2, num_gpus_per_env_runner=0.25)
        .learners(num_gpus_per_learner=1)
        .resources(placement_strategy="SPREAD")
        .evaluation(evaluation_interval=1, evaluation_num_env_runners=1)
    )
    request = PPO.default_resource_request(config)
    runner = {"CPU": 2, "GPU": 0.25}
    assert request.bundles == [{"CPU": 1, "GPU": 1}, runner, runner, runner]
    assert request.strategy == "SPREAD"


def test_the_cluster_has_two_nodes(cluster):
    nodes = [node for node in ray.nodes() if node["Alive"]]
    assert len(nodes) == 2
    assert all(node["Resources"]["CPU"] == CPUS_PER_NODE for node in nodes)


def test_spread_puts_a_trials_runners_on_both_nodes(cluster, tiny_config, tmp_path):
    # Four bundles of half a CPU (the learner and three runners) would fit on one node;
    # SPREAD places them as evenly as it can, two per node, so the runners span both.
    param_space = (
        tiny_config()
        .env_runners(num_env_runners=3, num_cpus_per_env_runner=0.5)
        .resources(num_cpus_for_main_process=0.5, placement_strategy="SPREAD")
    )
    (result,) = run(tmp_path, param_space)

    runners = list(result.metrics["runners"].values())
    assert len(runners) == 3
    assert len({runner["node"] for runner in runners}) == 2, result.metrics
    for runner in runners:
        # Each runner lives in the trial's placement group, with what it asked for.
        assert runner["placement_group"] == result.metrics["trial_placement_group"]
        assert runner["resources"] == {"CPU": 0.5}
        assert runner["num_envs"] == 2


def test_a_sweeps_trials_land_on_different_nodes(cluster, tiny_config, tmp_path):
    # Each trial reserves a whole node (its learner and one runner, one CPU each, PACK, the
    # default): the two run at once, one per node, each runner beside its learner.
    param_space = (
        tiny_config().env_runners(num_env_runners=1).debugging(seed=tune.grid_search([1, 2]))
    )
    results = run(tmp_path, param_space)

    trial_nodes = [result.metrics["trial_node"] for result in results]
    assert len(set(trial_nodes)) == 2, [result.metrics for result in results]
    assert set(trial_nodes) == {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    for result in results:
        (runner,) = result.metrics["runners"].values()
        assert runner["node"] == result.metrics["trial_node"], result.metrics
