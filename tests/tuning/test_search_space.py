"""Search spaces as data: the YAML checks and their messages, the Tune param space and the
Optuna define-by-run function (with real Optuna studies and every sampler)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import optuna
import pytest
import yaml
from ray import tune
from ray.tune.search.variant_generator import generate_variants

from tunerl.tuning import SearchSpaceError, build_tuner, load_search_space, make_sampler
from tunerl.tuning.search_space import DefineByRun
from tunerl.tuning.stopping import check_stop
from tunerl.tuning.sweep import SCHEDULERS

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
VALID = {
    "algo": "PPO",
    "env": "CartPole-v1",
    "config": {"num_envs_per_env_runner": 4},
    "space": {
        "lr": {"loguniform": [1.0e-4, 3.0e-3]},
        "num_epochs": {"randint": [3, 12]},
        "use_kl_loss": {"choice": [False, True]},
        "kl_coeff": {"loguniform": [0.05, 1.0], "when": {"use_kl_loss": True}},
        "model_config/fcnet_hiddens": {"choice": [[64, 64], [128, 128]]},
    },
    "points_to_evaluate": [{"lr": 3.0e-4, "model_config/fcnet_hiddens": [64, 64]}],
}


def write_space(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def with_space(**space) -> dict:
    return {**VALID, "space": space, "points_to_evaluate": []}


@pytest.mark.parametrize("path", sorted(SEARCH_SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_search_spaces_load(path):
    space = load_search_space(path)
    assert space.params
    assert space.to_tune()["env"] == space.env
    assert space.base_config().validate() is None


@pytest.mark.parametrize("path", sorted(SEARCH_SPACES.glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_shipped_search_spaces_build_a_tuner_with_every_scheduler(path, scheduler):
    space = load_search_space(path)
    for search in ("optuna", "random"):
        assert isinstance(build_tuner(space, search=search, scheduler=scheduler), tune.Tuner)


@pytest.mark.parametrize(
    ("data", "key", "fragments"),
    [
        (with_space(lrr={"uniform": [0.1, 0.2]}), "space.lrr", ["unknown config field", "'lr'"]),
        (with_space(gamma={"uniform": [0.99, 0.9]}), "space.gamma.uniform", ["must be below"]),
        (with_space(lr={"uniform": [0.1, 0.1]}), "space.lr.uniform", ["must be below"]),
        (with_space(lr={"loguniform": [0, 0.1]}), "space.lr.loguniform", ["> 0"]),
        (with_space(lr={"loguniform": [-1, 0.1]}), "space.lr.loguniform", ["> 0"]),
        (with_space(num_epochs={"randint": [1.5, 4]}), "space.num_epochs.randint", ["integers"]),
        (
            with_space(lr={"logunifrom": [1e-4, 1e-3]}),
            "space.lr",
            ["unknown distribution", "'loguniform'"],
        ),
        (with_space(lr={"uniform": [1e-4, 1e-3], "choice": [1]}), "space.lr", ["exactly one"]),
        (with_space(lr={"uniform": "1e-4..1e-3"}), "space.lr.uniform", ["non-empty list"]),
        (with_space(lr={"uniform": [1e-4, 1e-3, 1e-2]}), "space.lr.uniform", ["[low, high]"]),
        (
            with_space(kl_coeff={"uniform": [0.1, 0.2], "when": {"use_kl": True}}),
            "space.kl_coeff.when",
            ["unknown field 'use_kl'", "'use_kl_loss'"],
        ),
        (
            with_space(
                kl_coeff={"uniform": [0.1, 0.2], "when": {"use_kl_loss": True}},
                use_kl_loss={"choice": [False, True]},
            ),
            "space.kl_coeff.when",
            ["searched below it"],
        ),
        (with_space(gamma={"uniform": [0.9, 1.5]}), "space.gamma.uniform", ["1.5", "gamma"]),
        (with_space(minibatch_size={"choice": [64, 0]}), "space.minibatch_size.choice", ["0"]),
        (with_space(num_epochs={"uniform": [3, 12]}), "space.num_epochs.uniform", ["randint"]),
        (with_space(lr={"grid": [1e-3], "when": {"use_kl_loss": True}}), "space.lr.grid", ["grid"]),
        (with_space(**{"gamma/x": {"choice": [1]}}), "space.gamma/x", ["not a dict field"]),
        ({**VALID, "spaces": {}}, "spaces", ["unknown key", "'space'"]),
        ({k: v for k, v in VALID.items() if k != "env"}, "top level", ["missing key 'env'"]),
        ({**VALID, "algo": "PPX"}, "algo", ["'PPO'"]),
        ({**VALID, "env": "CartPol-v1"}, "env", ["Unknown env", "'CartPole-v1'"]),
        ({**VALID, "config": {"lrr": 1}}, "config", ["'lr'"]),
        ({**VALID, "mode": "maximize"}, "mode", ["'max'"]),
        ({**VALID, "stop": {"training_iteration": "ten"}}, "stop.training_iteration", ["number"]),
        (with_space(lr={"uniform": [1e-4, math.inf]}), "space.lr.uniform", ["finite"]),
        (with_space(lr={"loguniform": [math.nan, 1e-3]}), "space.lr.loguniform", ["finite"]),
        (
            with_space(**{"model_config/fcnet_hidden": {"choice": [[8], [16]]}}),
            "space.model_config/fcnet_hidden.choice",
            ["unknown key 'fcnet_hidden'", "Did you mean 'fcnet_hiddens'?"],
        ),
        (
            with_space(**{"model_config/fcnet_hiddens": {"choice": [[8], [-1]]}}),
            "space.model_config/fcnet_hiddens.choice",
            ["[-1]", "positive integers"],
        ),
        (
            {**VALID, "stop": {"training_iteration": math.nan}},
            "stop.training_iteration",
            ["finite number", "never be met"],
        ),
        (
            {**VALID, "stop": {"env_runners/episode_return_men": 400}},
            "stop.env_runners/episode_return_men",
            ["not a result key", "'env_runners/episode_return_mean'"],
        ),
        ({**VALID, "space": {}}, "space", ["at least one field"]),
        (
            {**VALID, "points_to_evaluate": [{"lr": 1.0}]},
            "points_to_evaluate[0].lr",
            ["outside", "loguniform"],
        ),
        (
            {**VALID, "points_to_evaluate": [{"gamma": 0.9}]},
            "points_to_evaluate[0].gamma",
            ["not a searched field"],
        ),
    ],
)
def test_search_space_errors_name_file_key_and_rule(tmp_path, data, key, fragments):
    path = write_space(tmp_path, data)
    with pytest.raises(SearchSpaceError) as error:
        load_search_space(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {key}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message.strip()


def test_invalid_yaml_and_missing_file_are_search_space_errors(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("algo: PPO\nspace: {lr: [1, 2\n")
    with pytest.raises(SearchSpaceError) as error:
        load_search_space(path)
    # One line, file:line:column first, then what YAML expected and where it began.
    (line,) = str(error.value).splitlines()
    assert line.startswith(f"{path}:3:1: not valid YAML: expected ',' or ']'"), line
    assert "at line 2" in line
    with pytest.raises(SearchSpaceError, match="does not exist"):
        load_search_space(tmp_path / "missing.yaml")


def test_to_tune_puts_domains_in_nested_fields_and_keeps_the_fixed_ones(tmp_path):
    space = load_search_space(write_space(tmp_path, VALID))
    param_space = space.to_tune()
    assert param_space["num_envs_per_env_runner"] == 4
    assert isinstance(param_space["lr"], tune.search.sample.Float)
    # randint's upper bound is included, as in the file (Tune's own is exclusive).
    assert (param_space["num_epochs"].lower, param_space["num_epochs"].upper) == (3, 13)
    assert isinstance(param_space["model_config"]["fcnet_hiddens"], tune.search.sample.Categorical)
    # The base config is not changed by the nested domain.
    assert space.base_config().model_config == {}


def test_tune_conditional_field_keeps_its_fixed_value_where_the_condition_fails(tmp_path):
    space = load_search_space(write_space(tmp_path, VALID))
    default = space.base_config().kl_coeff
    seen = {False: set(), True: set()}
    for _ in range(30):
        for _, config in generate_variants(space.to_tune()):
            seen[config["use_kl_loss"]].add(config["kl_coeff"])
            assert config["model_config"]["fcnet_hiddens"] in ([64, 64], [128, 128])
            assert 3 <= config["num_epochs"] <= 12
    assert seen[False] == {default}
    assert len(seen[True]) > 1 and all(0.05 <= v <= 1.0 for v in seen[True])


def run_study(define_by_run, sampler, n_trials: int, points=()) -> list[dict]:
    """Runs Optuna with the define-by-run function; returns the values it gave each trial."""
    study = optuna.create_study(sampler=sampler, direction="maximize")
    for point in points:
        study.enqueue_trial(point)
    given = []

    def objective(trial):
        values = define_by_run(trial)
        given.append(values)
        return float(values.get("lr", 0.0))

    study.optimize(objective, n_trials=n_trials)
    return given


def test_optuna_define_by_run_suggests_conditional_fields_only_when_their_condition_holds(
    tmp_path,
):
    space = load_search_space(write_space(tmp_path, VALID))
    given = run_study(space.to_optuna(), optuna.samplers.RandomSampler(seed=0), 30)
    assert {values["use_kl_loss"] for values in given} == {False, True}
    for values in given:
        assert ("kl_coeff" in values) == values["use_kl_loss"]
        # A list-valued choice comes back as the list, not as Optuna's JSON text.
        assert values["model_config/fcnet_hiddens"] in ([64, 64], [128, 128])
        assert isinstance(values["num_epochs"], int) and 3 <= values["num_epochs"] <= 12


def test_optuna_condition_on_a_fixed_field_reads_the_config(tmp_path):
    data = {
        **VALID,
        "config": {"use_kl_loss": True},
        "space": {"kl_coeff": {"uniform": [0.1, 0.5], "when": {"use_kl_loss": True}}},
        "points_to_evaluate": [],
    }
    space = load_search_space(write_space(tmp_path, data))
    given = run_study(space.to_optuna(), optuna.samplers.RandomSampler(seed=0), 5)
    assert all(0.1 <= values["kl_coeff"] <= 0.5 for values in given)


def test_points_to_evaluate_are_tried_first_with_list_choices_decoded(tmp_path):
    space = load_search_space(write_space(tmp_path, VALID))
    encoded = space.points_for_optuna()
    assert encoded == [{"lr": 3.0e-4, "model_config/fcnet_hiddens": json.dumps([64, 64])}]
    given = run_study(space.to_optuna(), optuna.samplers.TPESampler(seed=0), 2, encoded)
    assert given[0]["lr"] == 3.0e-4
    assert given[0]["model_config/fcnet_hiddens"] == [64, 64]
    assert space.points_for_tune() == [{"lr": 3.0e-4, "model_config": {"fcnet_hiddens": [64, 64]}}]


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp"])
def test_every_sampler_drives_the_define_by_run_space(tmp_path, sampler):
    space = load_search_space(write_space(tmp_path, VALID))
    given = run_study(space.to_optuna(), make_sampler(sampler, seed=1), 6)
    assert len(given) == 6
    assert all(1e-4 <= values["lr"] <= 3e-3 for values in given)


def test_unknown_sampler_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"sampler 'bayes' is not one of \('tpe'"):
        make_sampler("bayes")


def test_define_by_run_is_picklable_for_tune_experiment_state(tmp_path):
    import pickle

    space = load_search_space(write_space(tmp_path, VALID))
    restored = pickle.loads(pickle.dumps(space.to_optuna()))
    assert isinstance(restored, DefineByRun)
    assert [p.name for p in restored.params] == space.param_names
    assert pickle.loads(pickle.dumps(space.to_tune()))["env"] == "CartPole-v1"


def test_rllib_stop_keys_map_to_tunerls_with_a_warning(tmp_path, caplog):
    path = write_space(
        tmp_path, {**VALID, "stop": {"episode_reward_mean": 400, "timesteps_total": 5e4}}
    )
    with caplog.at_level(logging.WARNING, logger="tunerl"):
        space = load_search_space(path)
    assert space.stop == {
        "env_runners/episode_return_mean": 400,
        "num_env_steps_sampled_lifetime": 5e4,
    }
    assert "episode_reward_mean is RLlib's name" in caplog.text
    # Keys under learners/ and timers/ depend on the algorithm: not refused before the run.
    assert check_stop({"learners/default_policy/vf_loss": 1.0}) == {
        "learners/default_policy/vf_loss": 1.0
    }
