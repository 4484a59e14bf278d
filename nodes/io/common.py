"""Shared by the io nodes: output-path parameters checked at validation time, paths
resolved against the run's out_dir, and atomic file writes (whole file or none)."""
from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from ...graph.errors import NodeError


def path_with_suffix(suffix: str) -> Any:
    """A `str` parameter type that must end in `suffix`; a wrong one is a located workflow error."""

    def check(path: str) -> str:
        if not path.endswith(suffix) or path == suffix:
            raise PydanticCustomError("path_suffix", "must be a file name ending in '{suffix}' (e.g. 'out{suffix}')",
                                      {"suffix": suffix})
        return path

    return Annotated[str, AfterValidator(check), Field(json_schema_extra={"pattern": re.escape(suffix) + "$"})]


def resolve_output(path: str, out_dir: Path) -> Path:
    """Absolute path of an output file: relative paths resolve against the run's out_dir."""
    p = Path(path).expanduser()
    return (p if p.is_absolute() else Path(out_dir) / p).resolve()


class WritesFile:
    """Mixin of the io nodes with a `path` parameter: the file they write, checked before the run computes."""

    def output_files(self, out_dir: Path) -> list[Path]:
        return [resolve_output(self.path, out_dir)]  # type: ignore[attr-defined]  # the node's own field


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write `path` whole or not at all: a temporary file in the same folder, then os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise NodeError(f"cannot write '{path}': {e.strerror or e}; choose a writable file path") from e
    finally:
        with contextlib.suppress(OSError):  # gone after os.replace, or never created
            tmp.unlink()
    return path
