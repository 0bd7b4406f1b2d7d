"""The contract every registered algorithm keeps (Stable-Baselines3's test_run.py,
test_save_load.py and test_deterministic.py, over `tunerl.ALGORITHMS`): a new algorithm is
tested by being registered. Fixtures here; tiny configs and comparisons in helpers.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray


@pytest.fixture(scope="package")
def ray_session() -> Iterator[None]:
    """One local Ray for every contract test with remote runners, stopped after the last."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(params=[0, 1], ids=["local", "remote"])
def num_env_runners(request: pytest.FixtureRequest) -> int:
    """0 (sampling in the algorithm's process) and 1 (a Ray actor, in the shared session)."""
    if request.param:
        request.getfixturevalue("ray_session")
    return request.param
