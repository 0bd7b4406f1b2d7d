"""Classes named in a checkpoint resolve only to what this process already imported, or to
what the user allowed (`allow_import`, $TUNERL_ALLOW_IMPORT): loading never imports a module
it names and never runs a module `__getattr__` or a descriptor to find a class."""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from tunerl.core.checkpoint_io import CheckpointError

# Comma-separated top-level packages whose modules a checkpoint may import (beside the
# `allow_import` argument of the loaders), e.g. TUNERL_ALLOW_IMPORT=my_envs,my_models.
ALLOW_IMPORT_ENV = "TUNERL_ALLOW_IMPORT"
_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def allowed_imports(allow_import: Iterable[str] = ()) -> tuple[str, ...]:
    """The packages a load may import from: `allow_import`, and those in $TUNERL_ALLOW_IMPORT."""
    from_env = [name.strip() for name in os.environ.get(ALLOW_IMPORT_ENV, "").split(",")]
    return tuple(name for name in [*allow_import, *from_env] if name)


def resolve_class(path: Any, base: type, where: str, allow_import: Sequence[str] = ()) -> type:
    """The class `module:QualName` names, if it is a subclass of `base` and its module is
    already imported in this process, or is in (a package of) `allow_import` or
    $TUNERL_ALLOW_IMPORT. Never imports anything else, and looks the name up in the module's
    and classes' own `__dict__` (no module `__getattr__` or descriptor runs). `where` names
    the file and field, for the error."""
    if not isinstance(path, str) or path.count(":") != 1:
        raise CheckpointError(f"{where}: {path!r} is not a class path 'module:QualName'.")
    module_name, qualname = path.split(":")
    if not (_DOTTED_NAME.fullmatch(module_name) and _DOTTED_NAME.fullmatch(qualname)):
        raise CheckpointError(f"{where}: {path!r} is not a class path 'module:QualName'.")
    how_to_allow = (
        f"If you trust the checkpoint, import {module_name} before loading it, or allow its "
        f"package: allow_import=[{module_name.split('.')[0]!r}] (or "
        f"{ALLOW_IMPORT_ENV}={module_name.split('.')[0]}; `tunerl evaluate --allow-import "
        f"{module_name.split('.')[0]}`)."
    )
    module = sys.modules.get(module_name)
    if module is None:
        allowed = allowed_imports(allow_import)
        if not any(module_name == p or module_name.startswith(p + ".") for p in allowed):
            raise CheckpointError(
                f"{where} names the class {path!r}, whose module is not imported in this "
                f"process; loading a checkpoint never imports a module it names, so it was "
                f"not loaded. {how_to_allow}"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise CheckpointError(f"{where}: cannot import {module_name!r} ({error}).") from None
    obj: Any = module
    for part in qualname.split("."):
        namespace = getattr(obj, "__dict__", None)
        if not isinstance(namespace, dict | type(type.__dict__)) or part not in namespace:
            raise CheckpointError(
                f"{where} names the class {path!r}, but {module_name} defines no {qualname}."
            )
        obj = namespace[part]
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise CheckpointError(
            f"{where} names {path!r}, which is not a subclass of {base.__name__}, so it was "
            "not loaded."
        )
    return obj
