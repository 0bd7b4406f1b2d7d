"""The same greedy inference as a Ray Serve deployment, for many replicas on a cluster
(optional extra `serve`: pip install "tunerl[serve]").

    from tunerl.serving.ray_serve import policy_app
    serve.run(policy_app("path/to/checkpoint"), route_prefix="/")
    # POST /  {"observation": [...]} or {"observations": [[...], ...]}

Ray Serve binds 127.0.0.1 unless its http_options say otherwise (serve.start).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray import serve

from tunerl.core.columns import DEFAULT_MODULE_ID
from tunerl.serving.inference import GreedyPolicy, load_module


@serve.deployment
class PolicyDeployment:
    """Loads the module once per replica (under the checkpoint trust rules) and answers
    JSON requests as `tunerl serve` does."""

    def __init__(self, path: str, module_id: str, allow_import: Sequence[str]):
        self.policy = GreedyPolicy(load_module(path, module_id, allow_import))

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if "observation" in body:
                obs = self.policy.observations([body["observation"]])
                return {"action": self.policy.actions(obs)[0]}
            obs = self.policy.observations(body["observations"])
            return {"actions": self.policy.actions(obs)}
        except (ValueError, TypeError, KeyError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)


def policy_app(
    path: str, module_id: str = DEFAULT_MODULE_ID, allow_import: Sequence[str] = ()
) -> Any:
    """The deployment bound to a checkpoint, for `serve.run`."""
    return PolicyDeployment.bind(str(path), module_id, list(allow_import))
