"""The Field language and the shared field groups: one name, one meaning, one static type;
defaults that name a field that is not there are refused; the fields that rebuild runners."""

from __future__ import annotations

import typing

import gymnasium as gym
import pytest

import tunerl
from tunerl.core import fields as f
from tunerl.core.callbacks import Callbacks
from tunerl.core.config import AlgorithmConfig, ConfigError, did_you_mean
from tunerl.core.learner import Learner
from tunerl.core.rl_module import MultiRLModuleSpec, RLModuleSpec
from tunerl.policy.policy import PolicySpec

# Every group, with the class that gives its fields their static types.
GROUPS = {
    "BASE_FIELDS": f.BaseFields,
    "LR_FIELDS": f.LRFields,
    "SGD_FIELDS": f.SGDFields,
    "POLICY_GRADIENT_FIELDS": f.PolicyGradientFields,
    "CLIPPED_SURROGATE_FIELDS": f.ClippedSurrogateFields,
    "VTRACE_FIELDS": f.VTraceFields,
    "ASYNC_LEARNING_FIELDS": f.AsyncLearningFields,
    "REPLAY_FIELDS": f.ReplayFields,
    "TARGET_NETWORK_FIELDS": f.TargetNetworkFields,
}
# The fields Algorithm.reset_config rebuilt the runners for (core/algorithm.py's
# _RUNNER_FIELDS before the property moved onto the field).
RUNNER_FIELDS = {
    "env",
    "env_config",
    "normalize_actions",
    "clip_actions",
    "disable_env_checking",
    "num_env_runners",
    "num_envs_per_env_runner",
    "num_cpus_per_env_runner",
    "num_gpus_per_env_runner",
    "observation_filter",
    "model_config",
    "rl_module_spec",
    "evaluation_interval",
    "evaluation_num_env_runners",
    "evaluation_config",
    "restart_failed_sub_environments",
    # Multi-agent: the modules the runners hold and which agent acts with which.
    "policies",
    "policy_mapping_fn",
}


def type_hints(group_class: type) -> dict:
    """typing.get_type_hints of a group class, its forward references resolved."""
    names = {"gym": gym, "Callbacks": Callbacks, "Learner": Learner, "RLModuleSpec": RLModuleSpec}
    names.update(MultiRLModuleSpec=MultiRLModuleSpec, PolicySpec=PolicySpec)
    return typing.get_type_hints(group_class, localns=names)


# ----------------------------------------------------------------------- the language
def test_field_takes_types_positionally_and_rules_by_keyword():
    made = f.field("training", 0.5, "A weight.", *f.NUMBER, low=0, rebuilds_runners=True)
    assert made == f.Field("training", 0.5, "A weight.", (float, int), low=0, rebuilds_runners=True)
    assert made.rule() == "a number or an integer >= 0"
    assert made.problem(-1) == "out of range" and made.problem(0.0) is None
    assert not f.field("training", 1, "A count.", int).rebuilds_runners


def test_fields_of_collects_a_group_and_its_bases_in_order():
    assert list(f.SGD_FIELDS) == ["lr", "minibatch_size", "num_epochs"]
    assert f.SGD_FIELDS["lr"] is f.LR_FIELDS["lr"]


def test_with_defaults_replaces_defaults_and_leaves_the_group_alone():
    changed = f.with_defaults(f.SGD_FIELDS, {"lr": 1e-3, "num_epochs": 4})
    assert changed["lr"].default == 1e-3 and changed["num_epochs"].default == 4
    assert changed["minibatch_size"] is f.SGD_FIELDS["minibatch_size"]
    assert changed["lr"].doc == f.SGD_FIELDS["lr"].doc
    assert f.SGD_FIELDS["lr"].default == 5e-5


def test_with_defaults_refuses_a_default_for_a_field_that_is_not_there():
    with pytest.raises(ConfigError, match=r"not declared: \['num_epoch'\]"):
        f.with_defaults(f.SGD_FIELDS, {"num_epoch": 4})


def test_did_you_mean_offers_a_close_spelling_or_the_names_holding_the_word():
    assert did_you_mean("lrr", ["lr", "gamma"]) == " Did you mean 'lr'?"
    assert did_you_mean("lr", ["actor_lr", "critic_lr", "tau"]) == (
        " Did you mean one of 'actor_lr', 'critic_lr'?"
    )
    assert did_you_mean("zzz", ["lr", "gamma"]) == ""


# ------------------------------------------------------------------- the shared groups
def test_each_name_is_declared_in_one_group_only():
    owners: dict[str, list[str]] = {}
    for group_name, group in GROUPS.items():
        own = set(f.fields_of(group)) - set(f.LR_FIELDS if group is f.SGDFields else ())
        for name in own:
            owners.setdefault(name, []).append(group_name)
    assert {name: where for name, where in owners.items() if len(where) > 1} == {}


@pytest.mark.parametrize("group_name", GROUPS)
def test_every_field_of_a_group_has_a_static_type_and_a_doc(group_name):
    group_class = GROUPS[group_name]
    group = getattr(f, group_name)
    assert group == f.fields_of(group_class)
    assert set(type_hints(group_class)) == set(group)
    for name, declared in group.items():
        assert declared.doc.endswith((".", ")")), name
        assert declared.section == "training" or group is f.BASE_FIELDS, name


def test_one_meaning_for_the_names_that_had_several():
    assert "replayed" in f.BASE_FIELDS["train_batch_size_per_learner"].doc
    assert "sampled" in f.BASE_FIELDS["train_batch_size_per_learner"].doc
    doc = f.TARGET_NETWORK_FIELDS["target_network_update_freq"].doc
    assert "DQN counts the env steps it sampled, APPO those it trained on" in doc


def test_the_fields_that_rebuild_the_runners_are_marked_on_the_field():
    marked = {name for name, field in AlgorithmConfig.FIELDS.items() if field.rebuilds_runners}
    assert marked == RUNNER_FIELDS
    for group in GROUPS.values():
        if group is not f.BaseFields:
            assert not any(field.rebuilds_runners for field in f.fields_of(group).values())


# ------------------------------------------------------------------------ static types
def check_static_types(config_class: type[AlgorithmConfig]) -> None:
    """Every field has an annotation (class body or an inherited group class) that
    typing.get_type_hints resolves, and no Field is inherited that FIELDS leaves out."""
    types = config_class.field_types()
    missing = sorted(set(config_class.FIELDS) - set(types))
    assert missing == [], f"{config_class.__name__} fields without a static type: {missing}"
    inherited_unused = sorted(set(f.fields_of(config_class)) - set(config_class.FIELDS))
    assert inherited_unused == [], (
        f"{config_class.__name__} inherits group fields it does not declare: {inherited_unused}"
    )


def test_every_field_of_algorithm_config_has_a_static_type():
    check_static_types(AlgorithmConfig)
    spec_type = AlgorithmConfig.field_types()["rl_module_spec"]
    assert spec_type == (tunerl.RLModuleSpec | MultiRLModuleSpec | None)


@pytest.mark.parametrize("algo_name", sorted(tunerl.ALGORITHMS))
def test_every_field_of_every_registered_algorithm_has_a_static_type(algo_name):
    check_static_types(tunerl.ALGORITHMS[algo_name].config_class)
