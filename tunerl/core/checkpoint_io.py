"""Checkpoint files that load without unpickling anything.

A checkpoint directory holds JSON (config, counters, RNG states), tensors written with
`torch.save` and read back with `torch.load(weights_only=True)`, and `MANIFEST.json`, written
last, with the SHA-256 of every other file. Loading checks the manifest first: a file that
changed, or a directory whose writer died before the manifest, is refused before any of it
is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

MANIFEST = "MANIFEST.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, altered, or of an unknown format."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=True))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save_tensors(path: Path, tensors: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, path)


def load_tensors(path: Path) -> dict:
    """Reads a file written by `save_tensors`; `weights_only=True` refuses anything but
    tensors and plain containers, so a crafted file cannot run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path} does not hold only tensors and plain containers, so it was not loaded "
            f"({type(error).__name__}: {str(error).splitlines()[0]})."
        ) from None


def write_manifest(directory: Path) -> None:
    """Hashes every file below `directory`; written last, through a rename, so its presence
    means the checkpoint is complete."""
    directory = Path(directory)
    files = {
        path.relative_to(directory).as_posix(): _sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
    }
    temporary = directory / f".{MANIFEST}.{uuid.uuid4().hex}"
    temporary.write_text(json.dumps({"format_version": FORMAT_VERSION, "files": files}, indent=1))
    os.replace(temporary, directory / MANIFEST)


def verify_manifest(directory: Path) -> None:
    """Raises CheckpointError unless every file the manifest lists is present and unchanged."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"Checkpoint directory {directory} does not exist.")
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{directory} has no {MANIFEST}: it is not a tunerl checkpoint, or its writer "
            "stopped before finishing it. Load an earlier checkpoint."
        )
    try:
        manifest = read_json(manifest_path)
        files = manifest["files"]
        version = manifest["format_version"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest_path} is not a valid manifest ({error}).") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory} has checkpoint format {version}; this tunerl reads {FORMAT_VERSION}."
        )
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"Checkpoint file {path} listed in {MANIFEST} is missing.")
        if _sha256(path) != expected:
            raise CheckpointError(
                f"Checkpoint file {path} was changed after it was written (its SHA-256 differs "
                f"from {MANIFEST}); refusing to load the checkpoint."
            )


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary directory beside `path`, renamed to `path` when the block
    succeeds. A crash inside the block leaves whatever was at `path` untouched."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    if path.exists():
        os.replace(path, old)
    os.replace(temporary, path)
    shutil.rmtree(old, ignore_errors=True)


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str, base: type) -> type:
    """Imports `module:QualName` and checks it is a subclass of `base`."""
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise CheckpointError(f"Cannot import {path!r} named in the checkpoint: {error}") from None
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise CheckpointError(f"{path!r} is not a subclass of {base.__name__}.")
    return obj


def space_to_json(space: gym.Space) -> dict:
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
    raise CheckpointError(f"Cannot write a {type(space).__name__} space to a checkpoint.")


def space_from_json(data: dict) -> gym.Space:
    if data["type"] == "Box":
        dtype = np.dtype(data["dtype"])
        low = np.asarray(data["low"], dtype=dtype).reshape(data["shape"])
        high = np.asarray(data["high"], dtype=dtype).reshape(data["shape"])
        return gym.spaces.Box(low, high, dtype=dtype)
    if data["type"] == "Discrete":
        return gym.spaces.Discrete(data["n"], start=data["start"])
    raise CheckpointError(f"Unknown space type {data['type']!r} in the checkpoint.")
