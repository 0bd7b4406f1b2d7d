"""`tunerl serve` answering a real HTTP client, the Ray Serve deployment, and `tunerl export`
round trips: ONNX run in onnxruntime, TorchScript in a fresh process, both compared with
`forward_inference` on the same observations (observation filter included)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_ppo_config
from tunerl.cli import main
from tunerl.core import columns as c
from tunerl.serving.inference import GreedyPolicy, load_module

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    config = tiny_ppo_config().env_runners(observation_filter="MeanStdFilter")
    algo = config.build_algo()
    try:
        algo.train()
        return Path(algo.save_to_path(tmp_path_factory.mktemp("serve") / "ckpt"))
    finally:
        algo.stop()


def observations(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.5, size=(count, 4)).astype(np.float32)


def reference(checkpoint: Path, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    module = load_module(checkpoint)
    inputs = module.forward_inference({c.OBS: torch.from_numpy(obs)})[c.ACTION_DIST_INPUTS]
    return inputs.numpy(), inputs.argmax(-1).numpy()


@pytest.fixture
def served(checkpoint):
    process = subprocess.Popen(
        [sys.executable, "-m", "tunerl", "serve", str(checkpoint), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        yield port
    finally:
        process.terminate()
        process.wait(TIMEOUT_S)


def post(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, dict]:
    connection.request("POST", "/v1/actions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_serve_answers_single_and_batched_requests_on_one_connection(checkpoint, served):
    obs = observations(8)
    _, greedy = reference(checkpoint, obs)
    connection = http.client.HTTPConnection("127.0.0.1", served, timeout=TIMEOUT_S)
    connection.request("GET", "/health")
    health = connection.getresponse()
    assert health.status == 200 and json.loads(health.read())["status"] == "ok"
    singles = [post(connection, json.dumps({"observation": o.tolist()}).encode()) for o in obs]
    assert [status for status, _ in singles] == [200] * 8
    assert [reply["action"] for _, reply in singles] == greedy.tolist()
    status, reply = post(connection, json.dumps({"observations": obs.tolist()}).encode())
    assert status == 200 and reply["actions"] == greedy.tolist()
    status, reply = post(connection, b"{not json")
    assert status == 400 and "error" in reply
    status, reply = post(connection, json.dumps({"observation": [1.0, 2.0]}).encode())
    assert status == 400 and "needs [4]" in reply["error"]
    status, reply = post(connection, json.dumps({"observations": obs[:2].tolist()}).encode())
    assert status == 200  # the connection still serves after errors
    connection.close()


@pytest.mark.slow  # starts Ray and Serve
def test_ray_serve_deployment_answers_as_tunerl_serve(checkpoint):
    serve = pytest.importorskip("ray.serve")
    pytest.importorskip("starlette")
    import requests

    from tunerl.serving.ray_serve import policy_app

    obs = observations(4)
    _, greedy = reference(checkpoint, obs)
    serve.start(http_options={"host": "127.0.0.1", "port": 8765})
    try:
        serve.run(policy_app(str(checkpoint)), route_prefix="/")
        reply = requests.post(
            "http://127.0.0.1:8765/", json={"observations": obs.tolist()}, timeout=TIMEOUT_S
        )
        assert reply.status_code == 200 and reply.json()["actions"] == greedy.tolist()
    finally:
        serve.shutdown()


def test_onnx_export_runs_in_onnxruntime_with_the_filter_folded_in(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "policy.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    assert load_module(checkpoint).obs_normalizer.count > 0  # the filter has statistics
    obs = observations(16, seed=1) * 4 + 1  # far from zero mean: unfolded stats would show
    inputs, greedy = reference(checkpoint, obs)
    session = ort.InferenceSession(str(out))
    onnx_inputs, onnx_actions = session.run(None, {"obs": obs})
    np.testing.assert_allclose(onnx_inputs, inputs, rtol=1e-4, atol=1e-5)
    assert onnx_actions.tolist() == greedy.tolist()


def test_torchscript_export_runs_in_a_fresh_process(checkpoint, tmp_path):
    out = tmp_path / "policy.pt"
    assert main(["export", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    obs = observations(16, seed=2) * 4 + 1
    np.save(tmp_path / "obs.npy", obs)
    script = (
        "import sys, numpy as np, torch\n"
        "m = torch.jit.load(sys.argv[1])\n"
        "with torch.no_grad():\n"
        "    inputs, actions = m(torch.from_numpy(np.load(sys.argv[2])))\n"
        "np.save(sys.argv[3], inputs.numpy()); np.save(sys.argv[4], actions.numpy())\n"
    )
    paths = [str(out), str(tmp_path / "obs.npy"), str(tmp_path / "i.npy"), str(tmp_path / "a.npy")]
    subprocess.run([sys.executable, "-c", script, *paths], check=True, timeout=TIMEOUT_S)
    inputs, greedy = reference(checkpoint, obs)
    np.testing.assert_allclose(np.load(paths[2]), inputs, rtol=1e-5, atol=1e-6)
    assert np.load(paths[3]).tolist() == greedy.tolist()


def test_greedy_policy_matches_forward_inference_and_refuses_bad_shapes(checkpoint):
    policy = GreedyPolicy(load_module(checkpoint))
    obs = observations(5)
    assert policy.actions(obs) == reference(checkpoint, obs)[1].tolist()
    with pytest.raises(ValueError, match="needs \\[4\\]"):
        policy.observations([[1.0, 2.0, 3.0]])


def test_export_of_a_folder_without_a_module_is_a_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "holds no module 'default_policy'" in capsys.readouterr().err
