"""AlgorithmConfig / PPOConfig: errors that name field, value and rule; dict round trips;
deprecated names; Tune search spaces; cross-field checks; schedules; the fields a config
declares; env steps per sample call; which changes rebuild the runners."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ray import tune

from tunerl import PPO, AlgorithmConfig, Callbacks, ConfigError, DQNConfig, PPOConfig, SACConfig
from tunerl.core import columns as c
from tunerl.core.fields import BASE_FIELDS, NUMBER, REPLAY_FIELDS, field, with_defaults


class RecordingCallbacks(Callbacks):
    """Module-level, so a config holding it can be written and read back."""


# ------------------------------------------------------------------ single-field errors
def test_wrong_type_names_field_value_and_rule():
    with pytest.raises(ConfigError) as error:
        PPOConfig().training(gamma="0.9")
    message = str(error.value)
    assert "gamma='0.9'" in message
    assert "wrong type str" in message
    assert "gamma must be a number or an integer >= 0 <= 1" in message


def test_out_of_range_names_field_value_and_rule():
    with pytest.raises(ConfigError) as error:
        PPOConfig().training(gamma=1.5)
    message = str(error.value)
    assert "gamma=1.5" in message and "out of range" in message and "<= 1" in message

    with pytest.raises(ConfigError, match=r"num_env_runners=-1\): out of range.*>= 0"):
        PPOConfig().env_runners(num_env_runners=-1)
    with pytest.raises(ConfigError, match=r"clip_param=0\): out of range.*> 0"):
        PPOConfig().training(clip_param=0)


def test_bool_is_not_accepted_as_a_number():
    with pytest.raises(ConfigError, match="num_epochs=True.*a bool is not a number"):
        PPOConfig().training(num_epochs=True)


def test_nan_is_refused():
    with pytest.raises(ConfigError, match="gamma=nan.*NaN is not allowed"):
        PPOConfig().training(gamma=float("nan"))


def test_choice_fields_list_the_allowed_values():
    with pytest.raises(ConfigError) as error:
        PPOConfig().env_runners(observation_filter="MeanStd")
    assert "'NoFilter', 'MeanStdFilter'" in str(error.value)


def test_unknown_field_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"unknown field 'lrr'\. Did you mean 'lr'\?"):
        PPOConfig().training(lrr=1e-3)
    with pytest.raises(ConfigError, match=r"Did you mean 'num_envs_per_env_runner'\?"):
        PPOConfig().env_runners(num_env_per_env_runner=2)


def test_unknown_attribute_is_refused_with_a_suggestion():
    config = PPOConfig()
    with pytest.raises(ConfigError, match="Did you mean 'gamma'"):
        config.gama = 0.9


def test_field_in_the_wrong_section_names_the_right_one():
    with pytest.raises(ConfigError) as error:
        PPOConfig().training(num_env_runners=2)
    message = str(error.value)
    assert "training() has no field 'num_env_runners'" in message
    assert ".env_runners(num_env_runners=...)" in message


# -------------------------------------------------------------------------- dicts
def test_to_dict_from_dict_round_trip():
    config = (
        PPOConfig()
        .environment("CartPole-v1", env_config={"render_mode": None})
        .env_runners(num_envs_per_env_runner=3, observation_filter="MeanStdFilter")
        .training(lr=[[0, 1e-3], [1000, 1e-4]], gamma=0.95, lambda_=0.9, use_kl_loss=True)
        .evaluation(evaluation_interval=2, evaluation_config={"explore": False})
        .rl_module(model_config={"fcnet_hiddens": [8, 8], "fcnet_activation": "relu"})
        .callbacks(RecordingCallbacks)
        .debugging(seed=3)
    )
    as_dict = config.to_dict()
    restored = PPOConfig.from_dict(as_dict)

    assert restored == config
    assert restored.to_dict() == as_dict
    assert restored.lambda_ == 0.9 and restored.callbacks_class is RecordingCallbacks
    assert set(as_dict) == set(PPOConfig.FIELDS)


def test_to_dict_is_a_deep_copy():
    config = PPOConfig().rl_module(model_config={"fcnet_hiddens": [8]})
    config.to_dict()["model_config"]["fcnet_hiddens"].append(99)
    assert config.model_config == {"fcnet_hiddens": [8]}


def test_from_dict_accepts_lambda_spelling_and_skips_tune_internal_keys():
    config = PPOConfig.from_dict({"lambda": 0.8, "__trial_info__": object()})
    assert config.lambda_ == 0.8


def test_copy_is_independent():
    config = PPOConfig().rl_module(model_config={"fcnet_hiddens": [8]})
    copied = config.copy()
    copied.model_config["fcnet_hiddens"].append(4)
    copied.training(lr=0.1)
    assert config.model_config == {"fcnet_hiddens": [8]}
    assert config.lr == PPOConfig().lr


# ------------------------------------------------------------------- deprecated names
def test_rollouts_maps_num_rollout_workers_with_exactly_one_deprecation_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = PPOConfig().rollouts(num_rollout_workers=2)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in deprecations]
    assert "env_runners" in str(deprecations[0].message)
    assert config.num_env_runners == 2


def test_old_names_in_their_sections_warn_and_map():
    with pytest.warns(DeprecationWarning, match="sgd_minibatch_size -> minibatch_size"):
        config = PPOConfig().training(sgd_minibatch_size=32, num_sgd_iter=3)
    assert config.minibatch_size == 32 and config.num_epochs == 3
    with pytest.warns(DeprecationWarning, match="vf_clip_param -> vf_loss_clip"):
        config.training(vf_clip_param=10.0)
    assert config.vf_loss_clip == 10.0


def test_rllib_training_model_argument_is_accepted_as_deprecated():
    with pytest.warns(DeprecationWarning):
        config = PPOConfig().training(model={"fcnet_hiddens": [8]})
    assert config.model_config == {"fcnet_hiddens": [8]}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_deprecated_name_without_a_target_field_raises_config_error():
    with pytest.raises(ConfigError):
        AlgorithmConfig().training(vf_clip_param=10.0)


# ------------------------------------------------------------------------- building
def test_build_is_the_old_name_of_build_algo(tiny_config):
    algo = tiny_config().build()
    try:
        assert isinstance(algo, PPO)
        result = algo.train()
        assert result["num_env_steps_sampled_lifetime"] >= 256
    finally:
        algo.stop()


def test_built_algorithm_config_is_frozen(tiny_config, build):
    algo = build(tiny_config())
    with pytest.raises(ConfigError, match="frozen"):
        algo.config.lr = 1.0
    with pytest.raises(ConfigError, match="frozen"):
        algo.config.training(lr=1.0)
    unfrozen = algo.config.copy()
    unfrozen.training(lr=1.0)
    assert unfrozen.lr == 1.0


def test_building_does_not_freeze_or_change_the_users_config(tiny_config, build):
    config = tiny_config()
    build(config)
    config.training(lr=0.5)
    assert config.lr == 0.5


def test_algorithm_accepts_the_dict_tune_passes(tiny_config):
    algo = PPO(config=tiny_config(gamma=0.5).to_dict())
    try:
        assert isinstance(algo.config, PPOConfig)
        assert algo.config.gamma == 0.5
    finally:
        algo.stop()


def test_config_without_env_is_refused():
    with pytest.raises(ConfigError, match=r"no env.*\.environment\("):
        PPOConfig().build_algo()


# ---------------------------------------------------------------- Tune search spaces
@pytest.mark.parametrize(
    "space", [tune.grid_search([1e-3, 3e-4]), tune.loguniform(1e-4, 1e-2), tune.choice([1, 2])]
)
def test_search_spaces_are_accepted_but_not_built(tiny_config, space):
    config = tiny_config().training(lr=space)
    assert config.lr is space or config.lr == space
    with pytest.raises(ConfigError, match="lr holds a Tune search space"):
        config.validate()
    with pytest.raises(ConfigError, match="search space"):
        config.build_algo()


def test_search_space_in_another_section_is_refused_at_build(tiny_config):
    config = tiny_config().env_runners(num_envs_per_env_runner=tune.grid_search([1, 2]))
    with pytest.raises(ConfigError, match="num_envs_per_env_runner holds a Tune search space"):
        config.build_algo()


# --------------------------------------------------------------- cross-field checks
def test_minibatch_larger_than_train_batch_is_refused(tiny_config):
    config = tiny_config(train_batch_size_per_learner=100, minibatch_size=128)
    with pytest.raises(ConfigError) as error:
        config.validate()
    message = str(error.value)
    assert "minibatch_size=128" in message and "train_batch_size_per_learner=100" in message
    with pytest.raises(ConfigError):
        config.build_algo()


def test_evaluation_config_overrides_are_validated():
    with pytest.raises(ConfigError, match="explore='no'"):
        PPOConfig().evaluation(evaluation_config={"explore": "no"})
    with pytest.raises(ConfigError, match="Did you mean 'explore'"):
        PPOConfig().evaluation(evaluation_config={"exploer": False})
    config = PPOConfig().evaluation(evaluation_config={"explore": False, "gamma": 0.5})
    assert config.evaluation_config == {"explore": False, "gamma": 0.5}


def test_evaluation_config_set_as_attribute_is_checked_by_validate(tiny_config):
    config = tiny_config()
    config.evaluation_config = {"gamma": 2.0}
    with pytest.raises(ConfigError, match="gamma=2.0"):
        config.validate()


def test_evaluation_config_overrides_apply_to_evaluation_runners(tiny_config, build):
    algo = build(
        tiny_config().evaluation(evaluation_interval=1, evaluation_config={"explore": False})
    )
    batch = algo.eval_env_runner_group.sample(num_episodes=2)[c.DEFAULT_MODULE_ID]
    assert len(batch) > 0
    # explore=False: every action is the most likely one.
    np.testing.assert_array_equal(batch[c.ACTIONS], batch[c.ACTION_DIST_INPUTS].argmax(-1))
    training = algo.env_runner_group.sample(num_timesteps=200)[c.DEFAULT_MODULE_ID]
    assert (training[c.ACTIONS] != training[c.ACTION_DIST_INPUTS].argmax(-1)).any()


# ----------------------------------------------------------------------- schedules
@pytest.mark.parametrize(
    "schedule", [[[0, 1e-3], [1000, 1e-4]], [[0, 1e-3]], ((0, 1e-3), (10, 0.0))]
)
def test_lr_schedule_accepted(schedule):
    assert PPOConfig().training(lr=schedule).lr == schedule


@pytest.mark.parametrize(
    "schedule, problem",
    [
        ([[10, 1e-3], [100, 1e-4]], "start at 0"),
        ([[0, 1e-3], [0, 1e-4]], "increase"),
        ([[0, 1e-3], [100, -1e-4]], ">= 0"),
        ([1e-3, 1e-4], "pairs"),
        ([], "positive number or a list"),
        (0.0, "positive number"),
        (-1e-3, "positive number"),
        ("0.001", "positive number or a list"),
    ],
)
def test_lr_schedule_refused(schedule, problem):
    with pytest.raises(ConfigError, match="lr=") as error:
        PPOConfig().training(lr=schedule)
    assert problem in str(error.value)


def test_lr_schedule_is_interpolated_over_sampled_env_steps(tiny_config, build):
    schedule = [[0, 1e-2], [1000, 1e-3]]
    algo = build(tiny_config(lr=schedule))
    for _ in range(2):
        result = algo.train()
        steps = result["num_env_steps_sampled_lifetime"]
        expected = float(np.interp(steps, [0, 1000], [1e-2, 1e-3]))
        assert result["learners"][c.DEFAULT_MODULE_ID]["curr_lr"] == pytest.approx(expected)


# ------------------------------------------------------------ what a config declares
class ReplayOnlyConfig(AlgorithmConfig):
    """A config built from the groups alone, without SGD_FIELDS: what SACConfig becomes."""

    FIELDS = {
        **with_defaults(
            {**BASE_FIELDS, **REPLAY_FIELDS},
            {"rollout_fragment_length": 1, "num_steps_sampled_before_learning_starts": 10},
        ),
        "actor_lr": field("training", 1e-3, "Actor learning rate.", *NUMBER, low=0),
        "critic_lr": field("training", 1e-3, "Critics' learning rate.", *NUMBER, low=0),
    }


def test_a_field_the_config_does_not_declare_is_unknown_with_the_closest_names():
    with pytest.raises(ConfigError) as error:
        ReplayOnlyConfig().training(lr=1e-3)
    assert str(error.value) == (
        "ReplayOnlyConfig.training() got an unknown field 'lr'. "
        "Did you mean one of 'actor_lr', 'critic_lr'?"
    )
    with pytest.raises(ConfigError, match="unknown field 'num_epochs'"):
        ReplayOnlyConfig().training(num_epochs=2)
    with pytest.raises(ConfigError, match=r"PPOConfig.training\(\) got an unknown field 'n_step'"):
        PPOConfig().training(n_step=3)


def test_a_config_without_sgd_fields_validates_and_round_trips():
    config = ReplayOnlyConfig().environment("CartPole-v1")
    config.validate()
    assert "minibatch_size" not in config.to_dict()
    assert ReplayOnlyConfig.from_dict(config.to_dict()) == config


# ------------------------------------------------------------ env steps per sample call
def test_env_steps_per_sample_is_the_fragment_on_every_sub_env():
    config = PPOConfig().env_runners(
        num_env_runners=3, num_envs_per_env_runner=4, rollout_fragment_length=25
    )
    assert config.get_rollout_fragment_length() == 25
    assert config.env_steps_per_sample() == 100
    assert config.env_steps_per_round() == 300
    assert config.env_steps_per_round(num_runners=2) == 200
    assert config.copy().env_runners(num_env_runners=0).env_steps_per_round() == 100


def test_auto_fragment_splits_the_train_batch_over_every_sub_env():
    config = PPOConfig().env_runners(num_env_runners=3, num_envs_per_env_runner=4)
    config.training(train_batch_size_per_learner=1000)
    assert config.get_rollout_fragment_length() == 84  # ceil(1000 / 12)
    assert config.env_steps_per_round() == 1008 >= config.train_batch_size_per_learner


@pytest.mark.parametrize("config_class", [ReplayOnlyConfig, SACConfig, DQNConfig])
def test_auto_fragment_is_refused_at_validate_by_configs_that_replay(config_class):
    config = config_class().environment("CartPole-v1").env_runners(rollout_fragment_length="auto")
    assert config_class.replays_experience() and not PPOConfig.replays_experience()
    with pytest.raises(ConfigError) as error:
        config.validate()
    message = str(error.value)
    assert f"{config_class.__name__}.env_runners(rollout_fragment_length='auto')" in message
    assert "transitions replayed per update" in message and "as an integer" in message
    config.env_runners(rollout_fragment_length=2)
    config.validate()
    assert config.env_steps_per_sample() == 2 * config.num_envs_per_env_runner


# ---------------------------------------------------------------- runner rebuilds
def test_needs_new_runners_when_a_field_marked_rebuilds_runners_changes():
    built = PPOConfig().environment("CartPole-v1")
    assert not built.copy().needs_new_runners(built)
    assert not built.copy().training(lr=0.1, gamma=0.5).needs_new_runners(built)
    assert not built.copy().env_runners(explore=False, sample_timeout_s=5).needs_new_runners(built)
    assert built.copy().env_runners(num_envs_per_env_runner=2).needs_new_runners(built)
    assert built.copy().rl_module(model_config={"fcnet_hiddens": [8]}).needs_new_runners(built)
    assert built.copy().evaluation(evaluation_interval=1).needs_new_runners(built)


def test_section_methods_return_the_config_they_were_called_on():
    config = PPOConfig()
    assert config.training(lr=1e-3).environment("CartPole-v1") is config
    assert isinstance(config.copy(), PPOConfig)
