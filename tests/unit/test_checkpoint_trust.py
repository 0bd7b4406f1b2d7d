"""A checkpoint is data: loading one never imports a module or calls anything it names,
never unpickles, accepts exactly the files its manifest lists, and a failed restore changes
nothing (issue 12, items 1-4)."""

from __future__ import annotations

import json
import pathlib
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from ray import tune

from tunerl import PPO, Algorithm, CheckpointError, RLModule
from tunerl.core import checkpoint_io, class_resolution
from tunerl.core import checkpoint_layout as layout
from tunerl.core import columns as c
from tunerl.core.learner import DEFAULT_OPTIMIZER
from tunerl.core.rl_module import MODULE_SPEC_FILE, MODULE_STATE_FILE
from tunerl.tuning import evaluate_checkpoint

MODULE_DIR = layout.module_dir(c.DEFAULT_MODULE_ID)
MODULE_STATE = MODULE_DIR / MODULE_STATE_FILE
MODULE_SPEC = MODULE_DIR / MODULE_SPEC_FILE
LEARNER_STATE = layout.LEARNER_DIR / layout.LEARNER_TENSORS_FILE
LEARNER_JSON = layout.LEARNER_DIR / layout.LEARNER_JSON_FILE
ALGORITHM_STATE = Path(layout.STATE_FILE)
RNG_STATE = Path(layout.RNG_FILE)


@pytest.fixture
def algo(tiny_config, build) -> Algorithm:
    algo = build(tiny_config(use_kl_loss=True))
    algo.train()
    return algo


@pytest.fixture
def checkpoint(algo, tmp_path) -> Path:
    return Path(algo.save_to_path(tmp_path / "checkpoint"))


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def reseal(checkpoint: Path) -> None:
    """Rewrites the manifests (every module folder's, then the checkpoint's), as an attacker
    who rewrites the files can."""
    for folder in sorted((checkpoint / layout.MODULE_DIR).iterdir()):
        checkpoint_io.write_manifest(folder)
    checkpoint_io.write_manifest(checkpoint)


def popen_env(marker: Path):
    """The issue's attack: env = subprocess:Popen, called with env_config as its argv."""

    def edit(state: dict) -> None:
        config = state["config"] if "config" in state else state
        config["env"] = {"__class__": "subprocess:Popen"}
        config["env_config"] = {"sh": 0, "-c": 0, f"touch {marker}": 0}

    return edit


def test_the_popen_attack_itself_runs_a_command(tmp_path):
    # The payload is real: called as the old loader did, it creates the marker.
    marker = tmp_path / "marker"
    subprocess.Popen({"sh": 0, "-c": 0, f"touch {marker}": 0}).wait()
    assert marker.exists()


# ------------------------------------------------------------- 1. no import, no call
def test_env_naming_popen_runs_nothing_in_from_checkpoint_or_restore(algo, checkpoint, tmp_path):
    marker = tmp_path / "marker"
    edit_json(checkpoint / ALGORITHM_STATE, popen_env(marker))
    reseal(checkpoint)
    with pytest.raises(CheckpointError, match=r"config\.env names the class 'subprocess:Popen'"):
        PPO.from_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match="register_env"):
        Algorithm.from_checkpoint(checkpoint, allow_import=["subprocess"])
    algo.restore_from_path(checkpoint)  # the live algorithm's own config is used, not the file's
    assert not marker.exists()


@pytest.mark.parametrize("env", ["subprocess:Popen", "no_such_module:Env-v0", 7])
def test_env_that_is_not_a_gymnasium_id_or_registered_name_is_refused(checkpoint, env):
    edit_json(checkpoint / ALGORITHM_STATE, lambda state: state["config"].update(env=env))
    reseal(checkpoint)
    with pytest.raises(CheckpointError, match="neither a Gymnasium id nor a name given to"):
        PPO.from_checkpoint(checkpoint)
    assert "no_such_module" not in sys.modules


def test_tunerl_evaluate_of_a_crafted_checkpoint_runs_nothing(checkpoint, tmp_path):
    marker = tmp_path / "marker"
    edit_json(checkpoint / ALGORITHM_STATE, popen_env(marker))
    reseal(checkpoint)
    run = subprocess.run(
        [sys.executable, "-m", "tunerl", "evaluate", str(checkpoint), "--episodes", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert "subprocess:Popen" in run.stderr and "Traceback" not in run.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "module_folder", [f"rl_module/{c.DEFAULT_MODULE_ID}", "module"], ids=["export", "old_export"]
)
def test_export_folder_naming_popen_runs_nothing(checkpoint, tmp_path, module_folder):
    # An export holds rl_module/<module_id>/ (tunerl 0.1's exports one module/): either way
    # its config.json is data.
    export = tmp_path / "export"
    (export / module_folder).mkdir(parents=True)
    for name in (MODULE_SPEC_FILE, MODULE_STATE_FILE, checkpoint_io.MANIFEST):
        (export / module_folder / name).write_bytes((checkpoint / MODULE_DIR / name).read_bytes())
    state = json.loads((checkpoint / ALGORITHM_STATE).read_text())
    config = {"algo_class": state["algo_class"], "config": state["config"]}
    marker = tmp_path / "marker"
    popen_env(marker)(config)
    (export / "config.json").write_text(json.dumps(config))
    checkpoint_io.write_manifest(export)
    with pytest.raises(CheckpointError, match="subprocess:Popen"):
        evaluate_checkpoint(export, episodes=1)
    assert not marker.exists()


@pytest.mark.parametrize(
    "field, value, why",
    [
        ("callbacks_class", "collections:OrderedDict", "not a subclass of Callbacks"),
        ("learner_class", "tunerl.core.callbacks:Callbacks", "not a subclass of Learner"),
        ("callbacks_class", "no_such_pkg.sub:Callbacks", "not imported in this process"),
        ("callbacks_class", "os:system", "not a subclass of Callbacks"),
        ("num_epochs", "subprocess:Popen", "may name classes only in"),
    ],
)
def test_config_classes_resolve_only_to_imported_subclasses(checkpoint, field, value, why):
    edit_json(
        checkpoint / ALGORITHM_STATE,
        lambda state: state["config"].update({field: {"__class__": value}}),
    )
    reseal(checkpoint)
    with pytest.raises(CheckpointError, match=why) as error:
        PPO.from_checkpoint(checkpoint)
    assert f"config.{field}" in str(error.value)
    assert "no_such_pkg" not in sys.modules


def test_module_class_of_a_module_not_imported_is_refused_before_any_import(checkpoint):
    assert "this" not in sys.modules  # `import this` prints the Zen of Python
    edit_json(checkpoint / MODULE_SPEC, lambda spec: spec.update(module_class="this:Nothing"))
    reseal(checkpoint)
    with pytest.raises(CheckpointError, match="never imports a module") as error:
        RLModule.from_checkpoint(checkpoint / MODULE_DIR)
    message = str(error.value)
    assert "'this:Nothing'" in message and "allow_import=['this']" in message
    assert "this" not in sys.modules


def write_marker_package(root: Path, name: str, marker: Path, body: str = "") -> Path:
    package = root / name
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n{body}"
    )
    return package


def test_a_checkpoint_folder_that_is_a_python_package_runs_nothing(
    checkpoint, tmp_path, monkeypatch
):
    # The checkpoint folder holds an __init__.py and names itself as the module's package;
    # loading it from its parent directory must not import it.
    marker = tmp_path / "marker"
    write_marker_package(tmp_path, "checkpoint", marker)
    edit_json(checkpoint / MODULE_SPEC, lambda spec: spec.update(module_class="checkpoint:Module"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CheckpointError, match=r"__init__\.py"):  # an unlisted file
        PPO.from_checkpoint("checkpoint")
    spec = {"__rl_module_spec__": {"module_class": "checkpoint:Module", "model_config": {}}}
    edit_json(
        Path("checkpoint") / ALGORITHM_STATE, lambda s: s["config"].update(rl_module_spec=spec)
    )
    reseal(Path("checkpoint"))  # now listed: still never imported
    with pytest.raises(CheckpointError, match="never imports a module"):
        RLModule.from_checkpoint(Path("checkpoint") / MODULE_DIR)
    with pytest.raises(CheckpointError, match="never imports a module"):
        PPO.from_checkpoint("checkpoint")
    assert not marker.exists() and "checkpoint" not in sys.modules


CUSTOM_MODULE = """
from torch import nn
from tunerl import RLModule

class Wide(RLModule):
    def setup(self):
        self.net = nn.Linear(4, 3)

    def _forward(self, batch):
        out = self.net(batch["obs"])
        return {"action_dist_inputs": out[:, :2], "vf_preds": out[:, 2]}
"""


def test_allow_import_names_the_packages_a_load_may_import(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    write_marker_package(tmp_path, "trusted_models", marker, CUSTOM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import gymnasium as gym

    spaces = (gym.spaces.Box(-1.0, 1.0, (4,)), gym.spaces.Discrete(2))
    path = tmp_path / "module"
    # Written by a process that had the class; this one has not imported it.
    exec(CUSTOM_MODULE, namespace := {"__name__": "trusted_models"})
    module = namespace["Wide"](*spaces)
    module.save_to_path(path)
    assert "trusted_models" not in sys.modules

    with pytest.raises(CheckpointError, match="allow_import=\\['trusted_models'\\]"):
        RLModule.from_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="never imports"):
        RLModule.from_checkpoint(path, allow_import=["trusted"])  # a package, not a prefix
    monkeypatch.delitem(sys.modules, "trusted_models", raising=False)
    loaded = RLModule.from_checkpoint(path, allow_import=["trusted_models"])
    assert type(loaded).__name__ == "Wide" and marker.exists()
    assert torch.equal(loaded.get_state()["net.weight"], module.get_state()["net.weight"])
    monkeypatch.delitem(sys.modules, "trusted_models")
    monkeypatch.setenv(class_resolution.ALLOW_IMPORT_ENV, "other,trusted_models")
    assert type(RLModule.from_checkpoint(path)).__name__ == "Wide"


def test_names_are_looked_up_in_real_attributes_only(checkpoint):
    # A module-level __getattr__ (PEP 562) is code; the lookup never calls it.
    import types

    module = types.ModuleType("lazy_attrs")
    calls = []
    module.__getattr__ = lambda name: calls.append(name) or RLModule
    sys.modules["lazy_attrs"] = module
    try:
        edit_json(checkpoint / MODULE_SPEC, lambda s: s.update(module_class="lazy_attrs:Lazy"))
        reseal(checkpoint)
        with pytest.raises(CheckpointError, match="defines no Lazy"):
            RLModule.from_checkpoint(checkpoint / MODULE_DIR)
    finally:
        del sys.modules["lazy_attrs"]
    assert calls == []


# ------------------------------------------------------------------- 2. never unpickles
class WritesMarker:
    def __init__(self, marker: Path):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "code ran"))


def test_restore_refuses_rays_dict_checkpoint_pickle(algo, checkpoint, tmp_path):
    marker = tmp_path / "marker"
    (checkpoint / "_dict_checkpoint.pkl").write_bytes(pickle.dumps(WritesMarker(marker)))
    for restore in (algo.restore, algo.restore_from_path, PPO.from_checkpoint):
        with pytest.raises(CheckpointError, match=r"pickle files \['_dict_checkpoint.pkl'\]"):
            restore(str(checkpoint))
    checkpoint_io.write_manifest(checkpoint)  # even listed in the manifest
    with pytest.raises(CheckpointError):
        algo.restore(tune.Checkpoint.from_directory(checkpoint))
    assert not marker.exists()


def test_restore_accepts_a_path_a_checkpoint_and_the_result_of_save(algo, tiny_config, build):
    result = algo.save()
    expected = algo.get_module().get_state()
    for given in (result, result.checkpoint, result.checkpoint.path):
        other = build(tiny_config(seed=9, use_kl_loss=True))
        other.restore(given)
        assert other.iteration == 1
        assert all(torch.equal(other.get_module().get_state()[k], v) for k, v in expected.items())


def test_pickle_refusal_does_not_advise_turning_the_protection_off(checkpoint, tmp_path):
    marker = tmp_path / "marker"
    torch.save({"pi_head.weight": WritesMarker(marker)}, checkpoint / MODULE_STATE)
    reseal(checkpoint)
    with pytest.raises(CheckpointError) as error:
        RLModule.from_checkpoint(checkpoint / MODULE_DIR)
    message = str(error.value)
    assert "never unpickles" in message and "module_state.pt" in message
    assert "weights_only=False" not in message and "\n" not in message
    assert not marker.exists()


@pytest.fixture(scope="module")
def local_ray():
    import ray
    from ray import cloudpickle

    # The trial's callbacks come from this file, which Ray's workers cannot import.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _tune_callbacks(flag: Path, plant_pickle: Path | None):
    """Callbacks that fail a Tune trial's second iteration once, so Tune restores it from its
    first checkpoint; with `plant_pickle`, a pickle that would write that file is put into
    the trial's checkpoints first."""
    from tunerl.core.callbacks import Callbacks

    class FailSecondIterationOnce(Callbacks):
        def on_train_result(self, *, algorithm, result, **kwargs):
            if algorithm.iteration == 1 and not flag.exists():  # in the second step
                flag.write_text("failed once")
                if plant_pickle is not None:
                    trial_dir = Path(algorithm._storage.trial_fs_path)
                    for checkpoint in trial_dir.glob("checkpoint_*"):
                        payload = pickle.dumps(WritesMarker(plant_pickle))
                        (checkpoint / "_dict_checkpoint.pkl").write_bytes(payload)
                raise RuntimeError("injected failure")

    return FailSecondIterationOnce


@pytest.mark.parametrize("plant", [False, True], ids=["restores", "refuses_pickle"])
def test_tune_restores_a_failed_trial_through_tunerls_loader(
    local_ray, tiny_config, tmp_path, plant
):
    flag, marker = tmp_path / "flag", tmp_path / "marker"
    config = tiny_config().callbacks(_tune_callbacks(flag, marker if plant else None))
    tuner = tune.Tuner(
        PPO,
        param_space=config,
        run_config=tune.RunConfig(
            name="restore",
            storage_path=str(tmp_path / "results"),
            stop={"training_iteration": 3},
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    )
    (result,) = tuner.fit()
    assert flag.exists()  # the trial failed once, and Tune restored it
    if plant:
        assert result.error is not None and "pickle files" in str(result.error)
        assert not marker.exists()
    else:
        assert result.error is None
        assert result.metrics["training_iteration"] == 3


# ------------------------------------------------------ 3. the manifest means what it says
def add_file(checkpoint: Path) -> None:
    (checkpoint / "notes.txt").write_text("unlisted")


def drop_listed_file(checkpoint: Path) -> None:
    edit_json(checkpoint / "MANIFEST.json", lambda m: m["files"].pop(LEARNER_STATE.as_posix()))


def empty_files(checkpoint: Path) -> None:
    edit_json(checkpoint / "MANIFEST.json", lambda m: m.update(files={}))


def files_as_a_list(checkpoint: Path) -> None:
    edit_json(checkpoint / "MANIFEST.json", lambda m: m.update(files=list(m["files"])))


def listed_file_missing(checkpoint: Path) -> None:
    (checkpoint / RNG_STATE).unlink()


def entry(name: str):
    def edit(checkpoint: Path) -> None:
        def add(manifest: dict) -> None:
            manifest["files"][name] = manifest["files"][ALGORITHM_STATE.as_posix()]

        edit_json(checkpoint / "MANIFEST.json", add)

    return edit


def symlinked_file(checkpoint: Path) -> None:
    outside = checkpoint.parent / "outside.pt"
    outside.write_bytes((checkpoint / RNG_STATE).read_bytes())
    (checkpoint / RNG_STATE).unlink()
    (checkpoint / RNG_STATE).symlink_to(outside)


def manifest_not_json(checkpoint: Path) -> None:
    (checkpoint / "MANIFEST.json").write_text('{"format_version": 1, "files": {')


@pytest.mark.parametrize(
    "alter, why",
    [
        (add_file, r"files MANIFEST.json does not list: \['notes.txt'\]"),
        (drop_listed_file, "does not list: .*learner_state.pt"),
        (empty_files, "lists no files"),
        (files_as_a_list, "'files' must be an object"),
        (listed_file_missing, "rng_state.pt listed in MANIFEST.json is missing"),
        (entry("../outside.json"), "not a plain relative path"),
        (entry("/etc/passwd"), "not a plain relative path"),
        (entry("learner_group\\..\\..\\x"), "not a plain relative path"),
        (entry("./algorithm_state.json"), "not a plain relative path"),
        (symlinked_file, "rng_state.pt is a symlink"),
        (manifest_not_json, "MANIFEST.json is not valid JSON"),
    ],
    ids=lambda value: getattr(value, "__name__", None) or str(value)[:20],
)
def test_manifest_mismatch_is_refused(algo, checkpoint, alter, why):
    alter(checkpoint)
    with pytest.raises(CheckpointError, match=why):
        algo.restore_from_path(checkpoint)
    with pytest.raises(CheckpointError, match=why):
        PPO.from_checkpoint(checkpoint)


def test_a_symlink_to_a_checkpoint_and_a_symlinked_folder_are_refused(checkpoint, tmp_path):
    (tmp_path / "link").symlink_to(checkpoint)
    with pytest.raises(CheckpointError, match="is a symlink"):
        PPO.from_checkpoint(tmp_path / "link")
    module_dir = checkpoint / MODULE_DIR
    moved = tmp_path / "module_elsewhere"
    module_dir.rename(moved)
    module_dir.symlink_to(moved)
    with pytest.raises(CheckpointError, match="default_policy is a symlink"):
        PPO.from_checkpoint(checkpoint)


def test_each_file_is_checked_in_the_bytes_that_are_then_used(checkpoint):
    # A file swapped after it was read and hashed does not change what the reader returns.
    with checkpoint_io.CheckpointReader(checkpoint) as reader:
        first = reader.json(ALGORITHM_STATE.as_posix())
        edit_json(checkpoint / ALGORITHM_STATE, lambda state: state.update(iteration=99))
        assert reader.json(ALGORITHM_STATE.as_posix()) == first
    with checkpoint_io.CheckpointReader(checkpoint) as reader:
        with pytest.raises(CheckpointError, match="was changed after it was written"):
            reader.json(ALGORITHM_STATE.as_posix())


# ---------------------------------------------------- 4. a failed restore changes nothing
def live_state(algo: Algorithm) -> dict[str, Any]:
    learner = algo.learner.get_state()
    return {
        "module": learner["module"],
        "optimizers": learner["optimizers"],
        "tensors": learner["tensors"],
        "learner_json": json.dumps(learner["json"], sort_keys=True),
        "counters": dict(algo.counters),
        "iteration": algo.iteration,
        "rng": json.dumps(algo._rng.bit_generator.state, sort_keys=True),
        "torch_rng": torch.get_rng_state(),
        "episodes": (list(algo._episode_stats.returns), list(algo._episode_stats.lengths)),
        "runner_weights": algo.env_runner_group.local_env_runner.module.get_state(),
    }


def assert_unchanged(actual: Any, expected: Any, where: str = "state") -> None:
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            assert_unchanged(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_unchanged(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, where


def set_json(relative: Path, edit):
    def alter(checkpoint: Path) -> None:
        edit_json(checkpoint / relative, edit)

    return alter


def truncate(relative: Path, keep: int | None = None):
    def alter(checkpoint: Path) -> None:
        data = (checkpoint / relative).read_bytes()
        (checkpoint / relative).write_bytes(data[: len(data) // 2 if keep is None else keep])

    return alter


def rewrite_tensors(relative: Path, edit):
    def alter(checkpoint: Path) -> None:
        tensors = torch.load(checkpoint / relative, weights_only=True)
        edit(tensors)
        torch.save(tensors, checkpoint / relative)

    return alter


def wider_hidden_layer(checkpoint: Path) -> None:
    from tunerl import DefaultRLModule

    state = torch.load(checkpoint / MODULE_STATE, weights_only=True)
    import gymnasium as gym
    import numpy as np

    wide = DefaultRLModule(
        gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
        gym.spaces.Discrete(2),
        {"fcnet_hiddens": [32]},
    )
    assert set(wide.get_state()) == set(state)
    torch.save(wide.get_state(), checkpoint / MODULE_STATE)


MODULE = c.DEFAULT_MODULE_ID


def default_optimizer(learner_tensors: dict) -> dict:
    """The state of the default module's one optimizer in learner_state.pt."""
    return learner_tensors["optimizers"][MODULE][DEFAULT_OPTIMIZER]


# What the loader says when optimizer states are keyed by other module ids or names.
KEYED_BY_MODULES = r"it must be keyed by \['default_policy'\]"
KEYED_BY_NAMES = r"it must be keyed by the optimizer names \['default'\]"


def remove_module_folder(checkpoint: Path) -> None:
    shutil.rmtree(checkpoint / MODULE_DIR)


def copy_module_folder(module_id: str):
    """A second module folder (a valid module, but not one this algorithm trains)."""

    def alter(checkpoint: Path) -> None:
        shutil.copytree(checkpoint / MODULE_DIR, checkpoint / layout.module_dir(module_id))

    return alter


def state_as_a_list(checkpoint: Path) -> None:
    (checkpoint / ALGORITHM_STATE).write_text("[1, 2]")


CORRUPTIONS = {
    "truncated_state_json": (truncate(ALGORITHM_STATE), "algorithm_state.json is not valid JSON"),
    "state_json_empty": (set_json(ALGORITHM_STATE, lambda s: s.clear()), "'counters' is missing"),
    "state_json_a_list": (state_as_a_list, "algorithm_state.json must hold a JSON object"),
    "counter_a_string": (
        set_json(
            ALGORITHM_STATE, lambda s: s["counters"].update(num_env_steps_sampled_lifetime="9")
        ),
        "counters.num_env_steps_sampled_lifetime is '9'",
    ),
    "iteration_missing": (
        set_json(ALGORITHM_STATE, lambda s: s.pop("iteration")),
        "'iteration' is missing",
    ),
    "rng_wrong": (
        set_json(ALGORITHM_STATE, lambda s: s.update(rng={"x": 1})),
        "rng is not a generator state",
    ),
    "returns_strings": (
        set_json(ALGORITHM_STATE, lambda s: s.update(episode_returns=["a"])),
        "episode_returns",
    ),
    "kl_coeff_missing": (
        set_json(LEARNER_JSON, lambda s: s.pop("kl_coeff")),
        "learner_state.json.*kl_coeff",
    ),
    "learner_rng_wrong": (
        set_json(LEARNER_JSON, lambda s: s.update(rng=[1])),
        "learner_state.json: rng",
    ),
    "empty_module_pt": (truncate(MODULE_STATE, keep=0), "module_state.pt is empty"),
    "truncated_learner_pt": (
        truncate(LEARNER_STATE),
        "learner_state.pt does not hold only tensors",
    ),
    "torch_rng_wrong": (
        rewrite_tensors(RNG_STATE, lambda t: t.update(torch=torch.zeros(3))),
        "rng_state.pt: 'torch'",
    ),
    "module_tensor_shape": (
        rewrite_tensors(MODULE_STATE, lambda t: t.update({"pi_head.weight": torch.zeros(2, 5)})),
        "module_state.pt: the module 'default_policy' does not fit",
    ),
    "module_key_missing": (
        rewrite_tensors(MODULE_STATE, lambda t: t.pop("pi_head.bias")),
        "module_state.pt",
    ),
    "architecture_mismatch": (
        wider_hidden_layer,
        "module_state.pt: the module 'default_policy' does not fit",
    ),
    "optimizer_unknown_key": (
        rewrite_tensors(
            LEARNER_STATE, lambda t: default_optimizer(t).update(momentum=torch.zeros(1))
        ),
        r"learner_state.pt: optimizers.default_policy.default is an object with keys .*momentum",
    ),
    "optimizer_key_missing": (
        rewrite_tensors(LEARNER_STATE, lambda t: default_optimizer(t).pop("lr")),
        "optimizers.default_policy.default is an object with keys",
    ),
    "optimizer_moment_shape": (
        rewrite_tensors(
            LEARNER_STATE, lambda t: default_optimizer(t)["exp_avg"].__setitem__(0, torch.zeros(1))
        ),
        r"optimizers.default_policy.default.exp_avg\[0\] is a torch.float32 tensor of shape \(1,\)",
    ),
    "no_optimizers": (
        rewrite_tensors(LEARNER_STATE, lambda t: t.pop("optimizers")),
        "field 'optimizers' is missing",
    ),
    "optimizers_a_list": (
        rewrite_tensors(LEARNER_STATE, lambda t: t.update(optimizers=[default_optimizer(t)])),
        "learner_state.pt: .*optimizers",
    ),
    "optimizers_of_an_unknown_module": (
        rewrite_tensors(
            LEARNER_STATE, lambda t: t["optimizers"].update(other_policy=t["optimizers"][MODULE])
        ),
        rf"learner_state.pt: optimizers .*'other_policy'.*; {KEYED_BY_MODULES}",
    ),
    "optimizers_of_a_module_missing": (
        rewrite_tensors(LEARNER_STATE, lambda t: t["optimizers"].pop(MODULE)),
        rf"learner_state.pt: optimizers .*; {KEYED_BY_MODULES}",
    ),
    "optimizer_renamed": (
        rewrite_tensors(
            LEARNER_STATE,
            lambda t: t["optimizers"][MODULE].update(
                actor=t["optimizers"][MODULE].pop(DEFAULT_OPTIMIZER)
            ),
        ),
        rf"optimizers.default_policy .*'actor'.*; {KEYED_BY_NAMES}",
    ),
    "an_extra_optimizer": (
        rewrite_tensors(
            LEARNER_STATE, lambda t: t["optimizers"][MODULE].update(critic=default_optimizer(t))
        ),
        rf"optimizers.default_policy .*'critic'.*; {KEYED_BY_NAMES}",
    ),
    "module_optimizers_a_list": (
        rewrite_tensors(
            LEARNER_STATE, lambda t: t["optimizers"].update({MODULE: [default_optimizer(t)]})
        ),
        rf"optimizers.default_policy .*; {KEYED_BY_NAMES}",
    ),
    "tensors_a_list": (
        rewrite_tensors(LEARNER_STATE, lambda t: t.update(tensors=[torch.zeros(1)])),
        "learner_state.pt: tensors .*must be a dict",
    ),
    "tensors_unknown_to_the_learner": (
        rewrite_tensors(LEARNER_STATE, lambda t: t.update(tensors={"target": torch.zeros(1)})),
        "learner_state.pt: .*unexpected learner tensors",
    ),
    "module_folder_missing": (
        remove_module_folder,
        r"holds the modules \[\]; this algorithm trains \['default_policy'\]",
    ),
    "extra_module_folder": (
        copy_module_folder("other_policy"),
        r"holds the modules \['default_policy', 'other_policy'\]; this algorithm trains",
    ),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_a_malformed_checkpoint_is_refused_and_changes_nothing(algo, checkpoint, name):
    alter, why = CORRUPTIONS[name]
    algo.train()  # the live state now differs from the checkpoint's in every part
    alter(checkpoint)
    reseal(checkpoint)
    before = live_state(algo)
    with pytest.raises(CheckpointError, match=why) as error:
        algo.restore_from_path(checkpoint)
    assert_unchanged(live_state(algo), before)
    # One line that names what is wrong: never the saved tensors themselves.
    assert "\n" not in str(error.value) and "tensor(" not in str(error.value)
