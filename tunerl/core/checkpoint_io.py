"""Checkpoint folders: written atomically, read back as verified data, never as code.

A checkpoint folder holds JSON (config, counters, RNG states), tensors written with
`torch.save` and read with `torch.load(weights_only=True)`, numpy arrays read with
`allow_pickle=False`, and `MANIFEST.json` with the SHA-256 of every other file.

Reading (`CheckpointReader`) accepts a folder only if the files in it are exactly the files
its manifest lists (no symlinks, no entry outside the folder), and it reads each file once,
hashes those bytes and deserializes the same bytes: what was checked is what is used. The
manifest catches accidents and partial writes; it cannot stop someone who rewrites files and
manifest together. What protects against that is that nothing read here is code: classes
named in a checkpoint resolve only to classes this process has already imported, or to
modules the user allowed by name (`resolve_class`).

Writing (`atomic_directory`) builds the new folder beside the path and swaps it in whole, so
a reader (or a `kill -9` of the writer) finds the old checkpoint or the new one, never a mix,
and never replaces a folder that is not a tunerl checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

MANIFEST = "MANIFEST.json"
FORMAT_VERSION = 1
# File suffixes that only pickle writes; a checkpoint holding one is refused by name.
PICKLE_SUFFIXES = (".pkl", ".pickle")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Siblings a save leaves beside its path while it runs (see `atomic_directory`).
_LEFTOVER_KINDS = ("tmp", "new", "old")


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, altered, malformed, or names code it may not load."""


# ------------------------------------------------------------------------------- reading
def _read_fd(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _open_dir(name: str, dir_fd: int | None) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)


def check_entry(name: Any, where: str) -> str:
    """`name` if it is a plain relative posix path inside the folder: no `..`, `.` or empty
    parts, not absolute, no backslash or NUL; else CheckpointError."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{where}: file entry {name!r} is not a non-empty string.")
    parts = name.split("/")
    if (
        name.startswith("/")
        or "\\" in name
        or "\0" in name
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise CheckpointError(
            f"{where}: file entry {name!r} is not a plain relative path inside the checkpoint "
            "(no '..', '.', empty parts, leading '/' or backslashes)."
        )
    return name


class CheckpointReader:
    """A checkpoint folder whose contents were checked against its manifest.

    Opening it lists the folder (through file descriptors, so a symlink or a folder renamed
    meanwhile cannot redirect a read) and refuses it unless the files present are exactly the
    files `MANIFEST.json` lists. `bytes(name)` reads a listed file once and checks its
    SHA-256; `json`, `tensors` and `arrays` deserialize those same bytes. Use as a context
    manager, or call `close()`."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(os.path.abspath(directory))
        recover_interrupted_save(self.directory)
        try:
            info = os.lstat(self.directory)
        except FileNotFoundError:
            raise CheckpointError(
                f"Checkpoint directory {self.directory} does not exist."
            ) from None
        if stat.S_ISLNK(info.st_mode):
            raise CheckpointError(f"{self.directory} is a symlink; a checkpoint is a real folder.")
        if not stat.S_ISDIR(info.st_mode):
            raise CheckpointError(f"Checkpoint {self.directory} is not a directory.")
        self._fd = _open_dir(str(self.directory), None)
        self._cache: dict[str, bytes] = {}
        try:
            present = self._list(self._fd, "")
            self.files = self._read_manifest(present)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _list(self, fd: int, prefix: str) -> set[str]:
        found = set()
        with os.scandir(fd) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if entry.is_symlink():
                    raise CheckpointError(
                        f"{self.directory / relative} is a symlink; a checkpoint holds only "
                        "regular files and folders, so it was not loaded."
                    )
                if entry.is_dir(follow_symlinks=False):
                    sub = _open_dir(entry.name, fd)
                    try:
                        found |= self._list(sub, relative + "/")
                    finally:
                        os.close(sub)
                elif entry.is_file(follow_symlinks=False):
                    found.add(relative)
                else:
                    raise CheckpointError(
                        f"{self.directory / relative} is not a regular file; refusing the "
                        "checkpoint."
                    )
        return found

    def _read_manifest(self, present: set[str]) -> dict[str, str]:
        where = str(self.directory / MANIFEST)
        if MANIFEST not in present:
            raise CheckpointError(
                f"{self.directory} has no {MANIFEST}: it is not a tunerl checkpoint, or its "
                "writer stopped before finishing it. Load an earlier checkpoint."
            )
        try:
            manifest = json.loads(self._read(MANIFEST))
        except (ValueError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{where} is not valid JSON ({error}).") from None
        if not isinstance(manifest, dict):
            raise CheckpointError(
                f"{where} must hold a JSON object, not {type(manifest).__name__}."
            )
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{where}: format_version is {version!r}; this tunerl reads {FORMAT_VERSION}."
            )
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise CheckpointError(
                f"{where}: 'files' must be an object of path -> SHA-256, not "
                f"{type(files).__name__}."
            )
        if not files:
            raise CheckpointError(f"{where} lists no files; a checkpoint has at least one.")
        for name, digest in files.items():
            check_entry(name, where)
            if name == MANIFEST:
                raise CheckpointError(f"{where} lists itself.")
            if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
                raise CheckpointError(f"{where}: files[{name!r}] = {digest!r} is not a SHA-256.")
        unlisted = sorted(present - set(files) - {MANIFEST})
        pickles = sorted(name for name in present if name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise CheckpointError(
                f"{self.directory} holds pickle files {pickles}. A tunerl checkpoint is JSON and "
                "tensors only; unpickling runs code, so the checkpoint was not loaded."
            )
        if unlisted:
            raise CheckpointError(
                f"{self.directory} holds files {MANIFEST} does not list: {unlisted}. A "
                "checkpoint holds exactly the files of its manifest, so it was not loaded."
            )
        missing = sorted(set(files) - present)
        if missing:
            raise CheckpointError(
                f"{self.directory}: {', '.join(missing)} listed in {MANIFEST} is missing; "
                "refusing the checkpoint."
            )
        return dict(files)

    def _read(self, name: str) -> bytes:
        *folders, file_name = name.split("/")
        fd = os.dup(self._fd)
        try:
            for folder in folders:
                sub = _open_dir(folder, fd)
                os.close(fd)
                fd = sub
            file_fd = os.open(file_name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
        finally:
            os.close(fd)
        return _read_fd(file_fd)

    def has(self, name: str) -> bool:
        return name in self.files

    def path(self, name: str) -> Path:
        """Where `name` is, for messages."""
        return self.directory / name

    def bytes(self, name: str) -> bytes:
        """The contents of listed file `name`, read once and checked against the manifest."""
        name = str(PurePosixPath(name))
        if name not in self.files:
            raise CheckpointError(f"Checkpoint {self.directory} has no file {name} in {MANIFEST}.")
        if name not in self._cache:
            data = self._read(name)
            if hashlib.sha256(data).hexdigest() != self.files[name]:
                raise CheckpointError(
                    f"Checkpoint file {self.path(name)} was changed after it was written (its "
                    f"SHA-256 differs from {MANIFEST}); refusing to load the checkpoint."
                )
            self._cache[name] = data
        return self._cache[name]

    def json(self, name: str) -> Any:
        """Listed file `name` as JSON."""
        try:
            return json.loads(self.bytes(name))
        except (ValueError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{self.path(name)} is not valid JSON ({error}).") from None

    def tensors(self, name: str) -> Any:
        """Listed file `name` as tensors and plain containers (never as pickled objects)."""
        return tensors_from_bytes(self.bytes(name), self.path(name))

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """Listed `.npz` file `name` as numpy arrays (object arrays, which pickle, refused)."""
        try:
            with np.load(io.BytesIO(self.bytes(name)), allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (ValueError, OSError, EOFError) as error:
            raise CheckpointError(
                f"{self.path(name)} is not an .npz of plain arrays, so it was not loaded ({error})."
            ) from None


def tensors_from_bytes(data: bytes, where: str | os.PathLike) -> Any:
    """`torch.load(weights_only=True)` of `data`: tensors and plain containers only, so a
    crafted file cannot run code."""
    if not data:
        raise CheckpointError(f"{where} is empty; it should hold tensors.")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        # torch's message ends with advice to switch its weights-only protection off, which
        # would run the file's code; keep only its first line, which says what it refused.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"{where} does not hold only tensors and plain containers, so it was not loaded: "
            f"tunerl never unpickles objects from a checkpoint ({type(error).__name__}: "
            f"{reason})."
        ) from None


def load_tensors(path: str | os.PathLike) -> Any:
    """Reads a tensor file on its own (outside a checkpoint's manifest), as `tensors_from_bytes`."""
    return tensors_from_bytes(Path(path).read_bytes(), path)


def read_json(path: str | os.PathLike) -> Any:
    """Reads a JSON file on its own; CheckpointError if it is not JSON."""
    try:
        return json.loads(Path(path).read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}).") from None


def verify_manifest(directory: str | os.PathLike) -> None:
    """Raises CheckpointError unless `directory` is a complete, unaltered checkpoint."""
    with CheckpointReader(directory) as reader:
        for name in reader.files:
            reader.bytes(name)


def json_number(
    state: Any, name: str, kind: type[int] | type[float], where: str, default: Any = None
) -> Any:
    """`state[name]` as `kind` (an int for int; any finite or infinite number for float),
    `default` if it is missing and a default is given; else CheckpointError naming `where`
    and the field. For `load_extra_files` hooks and learners' `set_extra_state`."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} must be an object, not {type(state).__name__}.")
    if name not in state:
        if default is not None:
            return default
        raise CheckpointError(f"{where}: field {name!r} is missing.")
    value = state[name]
    allowed = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise CheckpointError(
            f"{where}: {name} is {value!r}; it must be "
            f"{'an integer' if kind is int else 'a number'}."
        )
    return kind(value)


def json_numbers_per_module(
    state: Any, name: str, kind: type[int] | type[float], module_ids: Any, where: str
) -> dict[str, Any]:
    """`state[name]` as `{module_id: kind}` for every id of `module_ids` (a single number,
    as tunerl 0.1 wrote one module's learner state, is every module's); else CheckpointError
    as `json_number`'s."""
    saved = state.get(name) if isinstance(state, dict) else None
    if isinstance(saved, dict):
        return {mid: json_number(saved, mid, kind, f"{where}: {name}") for mid in module_ids}
    value = json_number(state, name, kind, where)
    return {module_id: value for module_id in module_ids}


# ------------------------------------------------------------------------------- writing
def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=True))


def save_tensors(path: Path, tensors: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, path)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _walk_files(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise CheckpointError(f"{path} is a symlink; a checkpoint holds only regular files.")
        if path.is_file():
            yield path


def write_manifest(directory: str | os.PathLike) -> None:
    """Lists every file below `directory` with its SHA-256 in `MANIFEST.json` (a nested
    folder's own manifest is a file like any other)."""
    directory = Path(directory)
    files = {
        path.relative_to(directory).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in _walk_files(directory)
        if path.relative_to(directory).as_posix() != MANIFEST
    }
    (directory / MANIFEST).write_text(
        json.dumps({"format_version": FORMAT_VERSION, "files": files}, indent=1)
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: Path) -> None:
    """Every file, then every folder (deepest first), reaches the disk before the rename
    that publishes them: a power cut after the rename cannot leave empty files behind."""
    for path in _walk_files(directory):
        _fsync(path)
    for folder in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        _fsync(folder)
    _fsync(directory)


def _leftovers(path: Path) -> dict[str, list[Path]]:
    """Folders an interrupted save of `path` left beside it, by kind."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.({'|'.join(_LEFTOVER_KINDS)})-[0-9a-f]{{8}}")
    found: dict[str, list[Path]] = {kind: [] for kind in _LEFTOVER_KINDS}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            match = pattern.fullmatch(entry.name)
            if match and entry.is_dir(follow_symlinks=False):
                found[match.group(1)].append(path.parent / entry.name)
    return found


def recover_interrupted_save(path: str | os.PathLike) -> None:
    """Where a save was killed between its two renames (the fallback of `_swap_in`), the path
    is missing while its complete new folder waits as `.<name>.new-<id>` beside the old one
    `.<name>.old-<id>`: renames the new one into place. Does nothing otherwise."""
    path = Path(os.path.abspath(path))
    if os.path.lexists(path):
        return
    leftovers = _leftovers(path)
    old_ids = {p.name.rsplit("-", 1)[1] for p in leftovers["old"]}
    for new in leftovers["new"]:
        if new.name.rsplit("-", 1)[1] in old_ids:
            with contextlib.suppress(FileNotFoundError):
                os.rename(new, path)
                _fsync(path.parent)
            return


def _is_replaceable(path: Path) -> bool:
    """True for an empty folder or a tunerl checkpoint holding nothing its manifest does not
    list (corrupt contents are fine: they are ours)."""
    if path.is_symlink() or not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
        listed = set(manifest["files"]) | {MANIFEST}
        present = {p.relative_to(path).as_posix() for p in _walk_files(path)}
    except (OSError, ValueError, KeyError, TypeError, CheckpointError):
        return False
    return present <= listed


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swaps two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the
    system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(error, os.strerror(error), str(second))


def _swap_in(temporary: Path, path: Path, token: str) -> None:
    """Puts the complete folder `temporary` at `path`. A first save is one rename. Replacing
    is one atomic exchange where the system has it, so `path` always holds a complete
    checkpoint. Elsewhere, two renames: `temporary` becomes `.<name>.new-<id>`, the old
    checkpoint `.<name>.old-<id>`, then the new one `path`; a kill between the last two
    leaves that pair, which `recover_interrupted_save` (run by every reader and every save)
    turns back into a checkpoint at `path`."""
    parent = path.parent
    if not os.path.lexists(path):
        os.rename(temporary, path)
    elif _exchange(temporary, path):
        shutil.rmtree(temporary)  # now the old checkpoint
    else:
        new = parent / f".{path.name}.new-{token}"
        old = parent / f".{path.name}.old-{token}"
        os.rename(temporary, new)
        _fsync(parent)
        os.rename(path, old)
        os.rename(new, path)
        _fsync(parent)
        shutil.rmtree(old)
    _fsync(parent)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty folder beside `path` to write a checkpoint into; when the block ends,
    it replaces `path` as a whole (see `_swap_in`). A failure inside the block leaves `path`
    as it was. Refuses a `path` that exists and is not a tunerl checkpoint or an empty
    folder: a save never deletes what it did not write. Folders of earlier saves that were
    killed are finished or removed first."""
    path = Path(os.path.abspath(path))
    if not path.name:
        raise CheckpointError(f"Cannot save a checkpoint at {path}.")
    recover_interrupted_save(path)
    if os.path.lexists(path) and not _is_replaceable(path):
        raise CheckpointError(
            f"{path} exists and is not a tunerl checkpoint (it has files no checkpoint "
            "manifest lists, or is not a folder); saving there would delete them. Give a new "
            "path, or an earlier checkpoint's, or remove the folder yourself."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    for folders in _leftovers(path).values():
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    token = uuid.uuid4().hex[:8]
    temporary = path.parent / f".{path.name}.tmp-{token}"
    temporary.mkdir()
    try:
        yield temporary
        _fsync_tree(temporary)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _swap_in(temporary, path, token)
