"""Fixtures of the sweep tests: one Ray for this folder, and a grid sweep that several
modules read."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import ray
from ray import tune

from tunerl.tuning import run_sweep

from .sweep_helpers import GRID_LRS, GRID_SEED, TINY_CONFIG, tiny_space


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="package")
def grid_sweep(ray_cluster, tmp_path_factory) -> tune.ResultGrid:
    """Two trials, one after the other in one reused actor: a grid over lr, a list-valued
    choice, and an evaluation every iteration. Seeded; checkpoints every iteration."""
    config = {
        **copy.deepcopy(TINY_CONFIG),
        "seed": GRID_SEED,
        "evaluation_interval": 1,
        "evaluation_duration": 2,
        "evaluation_config": {"explore": False},
    }
    space = tiny_space(
        {"lr": {"grid": GRID_LRS}, "model_config/fcnet_hiddens": {"choice": [[16], [8]]}},
        config=config,
    )
    return run_sweep(
        space,
        name="grid",
        storage_path=tmp_path_factory.mktemp("grid"),
        search="grid",
        max_concurrent=1,
        checkpoint_frequency=1,
        verbose=0,
    )
