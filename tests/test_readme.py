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
