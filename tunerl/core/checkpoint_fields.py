"""Checks of what a checkpoint's files hold: each failure is a CheckpointError naming the
file, the field, the value and what it must be."""

from __future__ import annotations

from typing import Any

import torch

from tunerl.core import checkpoint_io
from tunerl.core.checkpoint_io import CheckpointError


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def first_line(error: BaseException) -> str:
    # A library's error can run to pages (torch lists every mismatched key); the first line
    # says what was wrong.
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)


def check(ok: bool, where: Any, field: str, value: Any, wanted: str) -> None:
    if not ok:
        raise CheckpointError(f"{where}: {field} is {value!r}; it must be {wanted}.")


def field(state: dict, name: str, kind: type, where: str) -> Any:
    if name not in state:
        raise CheckpointError(f"{where}: field {name!r} is missing.")
    value = state[name]
    ok = is_int(value) if kind is int else isinstance(value, kind)
    check(ok, where, name, value, f"of type {kind.__name__}")
    return value


def json_object(reader: checkpoint_io.CheckpointReader, name: str) -> dict[str, Any]:
    data = reader.json(name)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{reader.path(name)} must hold a JSON object, not {type(data).__name__}."
        )
    return data


def check_like(loaded: Any, live: Any, where: Any, field: str) -> None:
    """`loaded` has the layout of `live`: the same keys at every level, tensors of the same
    shape and dtype, numbers for numbers. Lists of another length are left to the loader
    (an optimizer may upgrade an older layout, or refuse it)."""

    def describe(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
        if isinstance(value, dict):
            return f"an object with keys {sorted(value, key=str)}"
        return repr(value)

    if isinstance(live, torch.Tensor):
        ok = isinstance(loaded, torch.Tensor)
        ok = ok and loaded.shape == live.shape and loaded.dtype == live.dtype
    elif isinstance(live, dict):
        ok = isinstance(loaded, dict) and sorted(loaded, key=str) == sorted(live, key=str)
    elif isinstance(live, list | tuple):
        ok = isinstance(loaded, list | tuple)
    else:
        ok = is_number(loaded) if is_number(live) else True
    if not ok:
        raise CheckpointError(
            f"{where}: {field} is {describe(loaded)}; it must be {describe(live)} "
            "(the layout of this algorithm's own)."
        )
    if isinstance(live, dict):
        for key in live:
            check_like(loaded[key], live[key], where, f"{field}.{key}")
    elif isinstance(live, list | tuple) and len(loaded) == len(live):
        for index, (a, b) in enumerate(zip(loaded, live)):
            check_like(a, b, where, f"{field}[{index}]")
