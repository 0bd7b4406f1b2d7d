"""Gymnasium spaces as JSON data, for checkpoints (`module_spec.json`): Box, Discrete and
MultiDiscrete (with start), MultiBinary, and Dict and Tuple of these. Nothing is looked up
by name: an unknown type is a CheckpointError."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from tunerl.core.checkpoint_io import CheckpointError


def space_to_json(space: gym.Space) -> dict:
    """A space as JSON data: Box (bounds as lists; infinite bounds as JSON's Infinity),
    Discrete and MultiDiscrete (with start), MultiBinary, and Dict and Tuple of these.
    Any other space is a CheckpointError naming its type."""
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
            "dtype": str(space.dtype),
        }
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, gym.spaces.Dict):
        # A list of pairs, not an object: the keys' order is the flattening order.
        return {
            "type": "Dict",
            "spaces": [[key, space_to_json(child)] for key, child in space.spaces.items()],
        }
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(child) for child in space.spaces]}
    raise CheckpointError(
        f"Cannot write a {type(space).__name__} space to a checkpoint; checkpoints "
        f"hold {', '.join(SPACE_TYPES)} spaces."
    )


SPACE_TYPES = ("Box", "Discrete", "MultiDiscrete", "MultiBinary", "Dict", "Tuple")
_NUMERIC_DTYPES = frozenset(
    str(np.dtype(name))
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8")
)


def space_from_json(data: Any, where: str = "space") -> gym.Space:
    """The space `space_to_json` wrote. Every field is checked (CheckpointError naming it,
    `where` being the path to this space); an unknown type is refused, never looked up."""

    def field(name: str, kinds: type | tuple[type, ...]) -> Any:
        if name not in data:
            raise CheckpointError(f"{where}: the {data['type']} space has no {name!r}.")
        value = data[name]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise CheckpointError(f"{where}.{name} = {value!r} is not a valid value.")
        return value

    def dtype(name: str) -> np.dtype:
        value = field(name, str)
        if value not in _NUMERIC_DTYPES:
            raise CheckpointError(
                f"{where}.{name} = {value!r}; allowed: {sorted(_NUMERIC_DTYPES)}."
            )
        return np.dtype(value)

    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise CheckpointError(f"{where} = {data!r} is not a space (an object with a 'type').")
    kind = data["type"]
    try:
        if kind == "Box":
            shape = tuple(field("shape", list))
            box_dtype = dtype("dtype")
            low = np.asarray(field("low", list | float | int), dtype=box_dtype).reshape(shape)
            high = np.asarray(field("high", list | float | int), dtype=box_dtype).reshape(shape)
            return gym.spaces.Box(low, high, dtype=box_dtype)
        if kind == "Discrete":
            return gym.spaces.Discrete(field("n", int), start=field("start", int))
        if kind == "MultiDiscrete":
            return gym.spaces.MultiDiscrete(
                np.asarray(field("nvec", list), dtype=np.int64),
                dtype=dtype("dtype"),
                start=np.asarray(field("start", list), dtype=np.int64),
            )
        if kind == "MultiBinary":
            return gym.spaces.MultiBinary(field("n", int | list))
        if kind == "Dict":
            pairs = field("spaces", list)
            if not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in pairs
            ):
                raise CheckpointError(f"{where}.spaces must be a list of [name, space] pairs.")
            return gym.spaces.Dict(
                {key: space_from_json(child, f"{where}[{key!r}]") for key, child in pairs}
            )
        if kind == "Tuple":
            children = field("spaces", list)
            return gym.spaces.Tuple(
                [space_from_json(child, f"{where}[{i}]") for i, child in enumerate(children)]
            )
    except CheckpointError:
        raise
    except (ValueError, TypeError, AssertionError) as error:
        # gymnasium's own checks (n > 0, low <= high, matching shapes) refused the values.
        raise CheckpointError(f"{where}: not a valid {kind} space ({error}).") from None
    raise CheckpointError(
        f"{where}: unknown space type {kind!r}; checkpoints hold {', '.join(SPACE_TYPES)} spaces."
    )
