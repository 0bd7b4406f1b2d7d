"""Callbacks: hooks a user overrides to watch or change a run, RLlib-style."""

from __future__ import annotations

from typing import Any


class Callbacks:
    """Subclass and override what you need; pass the class to `.callbacks(MyCallbacks)`."""

    def on_algorithm_init(self, *, algorithm: Any, **kwargs: Any) -> None:
        """After the algorithm built its learner and runners."""

    def on_sample_end(self, *, algorithm: Any, samples: Any, **kwargs: Any) -> None:
        """After each train batch was sampled, before learning on it."""

    def on_train_result(self, *, algorithm: Any, result: dict, **kwargs: Any) -> None:
        """With each result; may add keys to it."""

    def on_checkpoint_loaded(self, *, algorithm: Any, **kwargs: Any) -> None:
        """After a checkpoint was restored."""
