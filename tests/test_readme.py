"""The README's quick start runs as written (with a smaller batch, so the suite stays fast)."""

import re
from pathlib import Path

import ray

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    quick_start = blocks[0].replace(
        "train_batch_size_per_learner=2000", "train_batch_size_per_learner=512"
    )
    quick_start = quick_start.replace("range(5)", "range(2)")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    try:
        exec(compile(quick_start, str(README), "exec"), namespace)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    logits = namespace["logits"]
    assert logits.shape == (1, 2)
    result = namespace["result"]
    assert result["evaluation"]["env_runners"]["num_episodes"] == 10
    assert result["training_iteration"] == 2


def test_the_custom_loss_example_trains_and_reports_its_term():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (example,) = [block for block in blocks if "class PPOWithL2" in block]
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    from tunerl import PPOConfig

    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .training(
            learner_class=namespace["PPOWithL2"],
            train_batch_size_per_learner=128,
            minibatch_size=64,
            num_epochs=1,
        )
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        stats = algo.train()["learners"]["default_policy"]
    finally:
        algo.stop()
    assert stats["l2"] > 0


def test_the_vpg_file_in_the_readme_is_the_example_as_it_is():
    source = (README.parent / "tunerl" / "examples" / "vpg.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert source in blocks


def test_the_multi_agent_example_trains_two_modules():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (example,) = [block for block in blocks if "MultiAgentCartPole, env_config" in block]
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    algo, result = namespace["algo"], namespace["result"]
    try:
        assert set(result["env_runners"]["module_episode_returns_mean"]) == {"p0", "p1"}
        assert set(result["learners"]) == {"p0", "p1"}
    finally:
        algo.stop()
