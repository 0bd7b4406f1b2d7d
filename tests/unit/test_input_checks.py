"""Every user input is checked where it is given: model_config keys and values, the classes
a config names, NaN and inf in numeric fields; an algorithm refuses to train after stop(),
and building one outside Tune leaves no empty folder in ~/ray_results."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
from ray import tune
from torch import nn

from tunerl import (
    Callbacks,
    ConfigError,
    DQNConfig,
    Learner,
    PPOConfig,
    RLModule,
    RLModuleSpec,
    SACConfig,
)


class WidthModule(RLModule):
    """A custom module that lists the model_config keys it reads."""

    model_config_keys = ("width",)

    def setup(self):
        self.net = nn.Linear(4, self.model_config["width"])

    def _forward(self, batch):
        out = self.net(batch["obs"])
        return {"action_dist_inputs": out[:, :2], "vf_preds": out[:, 2]}


class FreeModule(WidthModule):
    """A custom module that does not list its keys: its model_config is not checked."""

    model_config_keys = None


def cartpole(config_class=PPOConfig):
    return config_class().environment("CartPole-v1")


# ------------------------------------------------------------------------ model_config
@pytest.mark.parametrize(
    ("config_class", "typo", "closest"),
    [(PPOConfig, "fcnet_hidden", "fcnet_hiddens"), (DQNConfig, "duelling", "dueling")],
)
def test_a_misspelled_model_config_key_is_refused_with_the_closest_name(
    config_class, typo, closest
):
    config = cartpole(config_class).rl_module(model_config={typo: [32]})
    with pytest.raises(ConfigError) as error:
        config.validate()
    message = str(error.value)
    assert f"unknown key {typo!r}" in message
    assert f"Did you mean {closest!r}?" in message


def test_a_key_of_another_algorithms_module_is_refused():
    with pytest.raises(ConfigError, match="unknown key 'dueling'"):
        cartpole().rl_module(model_config={"dueling": True}).validate()


@pytest.mark.parametrize("hiddens", [[-1], "64", [64.5], [0], [True], 64, [64, None]])
def test_fcnet_hiddens_must_be_positive_integers(hiddens):
    with pytest.raises(ConfigError) as error:
        PPOConfig().rl_module(model_config={"fcnet_hiddens": hiddens})
    message = str(error.value)
    assert f"fcnet_hiddens']={hiddens!r}" in message
    assert "list of positive integers" in message


def test_an_unknown_activation_names_the_allowed_ones():
    with pytest.raises(ConfigError) as error:
        PPOConfig().rl_module(model_config={"fcnet_activation": "sigmoid"})
    assert "'sigmoid'" in str(error.value) and "'tanh', 'relu'" in str(error.value)


def test_a_bool_option_refuses_other_values():
    with pytest.raises(ConfigError, match="vf_share_layers.*True or False"):
        PPOConfig().rl_module(model_config={"vf_share_layers": "yes"})


def test_the_module_specs_own_model_config_is_checked_too():
    spec = RLModuleSpec(model_config={"fcnet_hiddens": [-3]})
    with pytest.raises(ConfigError, match="RLModuleSpec.model_config"):
        PPOConfig().rl_module(rl_module_spec=spec)
    config = cartpole().rl_module(rl_module_spec=RLModuleSpec(model_config={"fcnet_hiden": [8]}))
    with pytest.raises(ConfigError, match="rl_module_spec.model_config.*'fcnet_hiddens'"):
        config.validate()


def test_a_custom_module_adds_the_keys_it_lists_and_refuses_others_unless_it_lists_none():
    spec = RLModuleSpec(module_class=WidthModule)
    config = cartpole().rl_module(rl_module_spec=spec, model_config={"width": 3})
    config.validate()
    config.rl_module(model_config={"widht": 3})
    with pytest.raises(ConfigError, match="Did you mean 'width'"):
        config.validate()
    # A class that lists no keys reads what it likes.
    config.rl_module(rl_module_spec=RLModuleSpec(module_class=FreeModule)).validate()


def test_a_search_space_inside_model_config_waits_for_tune_and_is_refused_by_validate():
    config = cartpole().rl_module(model_config={"fcnet_hiddens": tune.choice([[8], [16]])})
    with pytest.raises(ConfigError, match=r"model_config\['fcnet_hiddens'\] holds a Tune search"):
        config.validate()


# ----------------------------------------------------------------------------- classes
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (3, "must be an RLModuleSpec or a MultiRLModuleSpec, got int"),
        (RLModuleSpec(module_class=nn.Linear), "is not a subclass of tunerl.core.rl_module"),
        (RLModuleSpec(module_class="tunerl:DefaultRLModule"), "is not a subclass"),
    ],
)
def test_rl_module_spec_must_name_an_rl_module(value, problem):
    with pytest.raises(ConfigError, match="rl_module_spec=") as error:
        PPOConfig().rl_module(rl_module_spec=value)
    assert problem in str(error.value)


def test_learner_class_must_subclass_learner():
    with pytest.raises(ConfigError, match="Callbacks is not a subclass of tunerl.core.learner"):
        PPOConfig().training(learner_class=Callbacks)
    with pytest.raises(ConfigError, match="must be a class"):
        PPOConfig().training(learner_class="my_module:MyLearner")

    class MyLearner(Learner):
        pass

    assert PPOConfig().training(learner_class=MyLearner).learner_class is MyLearner


def test_callbacks_class_must_subclass_callbacks():
    with pytest.raises(ConfigError, match="Learner is not a subclass of tunerl.core.callbacks"):
        PPOConfig().callbacks(Learner)
    with pytest.raises(ConfigError, match="must be a class"):
        PPOConfig().callbacks(Callbacks())


# ------------------------------------------------------------------------ NaN and inf
@pytest.mark.parametrize(
    ("section", "name"),
    [
        ("training", "grad_clip"),
        ("env_runners", "sample_timeout_s"),
        ("reporting", "min_time_s_per_iteration"),
        ("training", "clip_param"),
        ("training", "vf_loss_clip"),
    ],
)
def test_numeric_fields_without_an_upper_bound_refuse_inf(section, name):
    with pytest.raises(ConfigError, match=f"{name}=inf.*inf is not allowed"):
        getattr(PPOConfig(), section)(**{name: math.inf})


def test_a_schedule_refuses_nan_and_inf():
    for schedule in ([[0, 1e-3], [100, math.nan]], [[0, 1e-3], [math.inf, 1e-4]]):
        with pytest.raises(ConfigError, match="finite"):
            PPOConfig().training(lr=schedule)


# ------------------------------------------------------------------------- life cycle
def test_train_after_stop_is_a_clear_error(tiny_config):
    algo = tiny_config().build_algo()
    algo.train()
    algo.stop()
    with pytest.raises(RuntimeError, match=r"was stopped.*build a new one.*from_checkpoint"):
        algo.train()


def test_build_algo_outside_tune_leaves_no_folder_in_ray_results(tmp_path):
    """In a fresh process with HOME in a temporary folder (Tune reads ~ when imported):
    building, training and stopping writes nothing there; save_to_path() without a path
    makes the folder then, and saves into it."""
    script = textwrap.dedent(
        """
        import os
        from pathlib import Path

        from tunerl import PPOConfig

        home = Path(os.environ["HOME"])
        config = (
            PPOConfig().environment("CartPole-v1")
            .training(train_batch_size_per_learner=64, minibatch_size=32)
            .rl_module(model_config={"fcnet_hiddens": [8]})
        )
        algo = config.build_algo()
        algo.train()
        print("after train:", sorted(p.name for p in home.iterdir()))
        path = Path(algo.save_to_path())
        print("saved under home:", path.is_relative_to(home / "ray_results"))
        algo.stop()
        """
    )
    env = {**os.environ, "HOME": str(tmp_path), "TUNE_RESULT_DIR": str(tmp_path / "tune")}
    process = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert "after train: []" in lines
    assert "saved under home: True" in lines
    assert not (tmp_path / "tune").exists()


@pytest.mark.parametrize("where", ["model_config", "rl_module_spec"])
def test_sac_refuses_no_hidden_layers_at_validate_not_with_an_index_error(where):
    config = SACConfig().environment("Pendulum-v1")
    if where == "model_config":
        config.rl_module(model_config={"fcnet_hiddens": []})
    else:
        config.rl_module(rl_module_spec=RLModuleSpec(model_config={"fcnet_hiddens": []}))
    with pytest.raises(ConfigError, match=r"fcnet_hiddens'\]=\[\].*at least one hidden layer"):
        config.validate()
