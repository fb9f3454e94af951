"""Files, whatever they hold: atomic writes, text encoding, file signatures, where a write may go.

Every file is written to a temporary name (``.tmp-<host>-<pid>-...``) in the same folder
and renamed into place, so a crash never leaves a half-written file under a real name;
:func:`abandoned_temporary` tells a temporary file whose writer died, for the run
directory to remove. A file that exists but cannot be read is reported by name
(:class:`DamagedFileError`), never taken for a whole one.

numpy and the standard library only (imageio when a picture is read).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import secrets
import socket
from typing import Any, Callable, Sequence

import numpy as np

from .snapshot import epoch_value
from .text import clean_text

__all__ = [
    "DamagedFileError", "VectorsNotKept", "RunDirectoryInUse", "atomic_write", "atomic_write_text", "encode_text",
    "check_inside", "abandoned_temporary", "read_png", "check_gif", "table_text",
]

logger = logging.getLogger("layerwatch")

_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_TMP = re.compile(r"^\.tmp-(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-)?")
# Temporary files whose writer cannot be told alive or dead (another machine, an older
# layout of the name) are removed once they are this old.
_STALE_SECONDS = 6 * 3600


class DamagedFileError(ValueError):
    """A run file that exists but cannot be read (truncated, empty, not what it should be)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path} is damaged ({reason}); it is skipped (delete it, or rerun to write it again)")
        self.path = path
        self.reason = reason

    def __reduce__(self):
        return (DamagedFileError, (self.path, self.reason))


class VectorsNotKept(DamagedFileError):
    """A snapshot whose pooled vectors were not kept (``keep_vectors="drift"``); its
    rows, labels, predictions, layout, metrics and frames are there."""

    def __init__(self, path: str, reason: str = "keep_vectors='drift'"):
        ValueError.__init__(
            self,
            f"{path} holds no pooled vectors: the run kept those of its first and latest snapshots only "
            f"({reason}); what needs them skips this snapshot (its layouts, metrics and frames are stored)",
        )
        self.path = path
        self.reason = reason

    def __reduce__(self):
        return (VectorsNotKept, (self.path, self.reason))


class RunDirectoryInUse(ValueError):
    """Another run that is still going holds the run directory (see :meth:`RunDirectory.claim`)."""


# -- atomic writes -----------------------------------------------------------------
def _tmp_name(ext: str) -> str:
    return f".tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{ext}"


def atomic_write(path: str, write: Callable[[Any], Any]) -> None:
    """Write ``path`` through ``write(fh)`` on a temporary file, then rename it into place.

    The temporary file is created with the mode a plain ``open()`` would give (the
    process's umask applies), so run files are readable as usual.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, _tmp_name(os.path.splitext(path)[1]))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def encode_text(text: str, path: str = "") -> bytes:
    """``text`` as UTF-8; what UTF-8 cannot encode (lone surrogates) becomes U+FFFD, with a
    warning, rather than failing the write (see :mod:`layerwatch.text`)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        logger.warning(
            "layerwatch: %s holds characters UTF-8 cannot encode (lone surrogates); written with U+FFFD in their place",
            path or "a text file",
        )
        return clean_text(text).encode("utf-8")


def atomic_write_text(path: str, text: str) -> None:
    data = encode_text(text, path)
    atomic_write(path, lambda fh: fh.write(data))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def abandoned_temporary(name: str, age: float) -> bool:
    """Whether a file called ``name``, ``age`` seconds old, is a temporary file of
    :func:`atomic_write` whose writer died (or, where that cannot be told, an old one)."""
    m = _TMP.match(name)
    if not m:
        return False
    if m.group("host") == _HOST and m.group("pid"):
        return not _pid_alive(int(m.group("pid")))
    return age > _STALE_SECONDS


def table_text(fields: Sequence[str], rows: list[dict]) -> str:
    """The CSV text of a table: its ``fields`` as header, rows in the order of their key
    columns (split, step, epoch, layer, head, metric, stat: those it has), epochs as
    :func:`~layerwatch.snapshot.epoch_value` writes them."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    order = [f for f in ("split", "step", "epoch", "layer", "head", "metric", "stat") if f in fields]
    for r in sorted(rows, key=lambda r: tuple(str(r[f]) if f in ("split", "metric", "stat") else float(r[f]) for f in order)):
        writer.writerow({k: (epoch_value(r[k]) if k == "epoch" else r[k]) for k in fields})
    return buf.getvalue()


# -- where a write may go --------------------------------------------------------------
def is_inside(root: str, path: str) -> bool:
    """Whether ``path``, resolved, is ``root`` (resolved) or lies under it."""
    root, path = os.path.realpath(root), os.path.realpath(path)
    return path == root or path.startswith(root + os.sep)


def check_inside(root: str, path: str) -> str:
    """``path`` if writing it stays inside the folder ``root``, else a ValueError.

    Folders on the way are resolved, so a symbolic link (``frames/train -> /elsewhere``)
    cannot steer a write out of the run directory.
    """
    if not is_inside(root, os.path.dirname(os.path.abspath(path))):
        raise ValueError(
            f"refusing to write {path}: it leads out of the run directory {root} (through a symbolic "
            "link?); remove the link or render into a plain folder"
        )
    if os.path.islink(path):
        raise ValueError(f"refusing to write {path}: it is a symbolic link; remove it first")
    return path


# -- file signatures -------------------------------------------------------------------
def _check_signature(path: str, signatures: tuple[bytes, ...], kind: str) -> None:
    """A :class:`DamagedFileError` for a file that is empty or does not start as a ``kind`` file does."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise DamagedFileError(path, "an empty file")
    if not any(head.startswith(sig) for sig in signatures):
        raise DamagedFileError(path, f"not a {kind} file")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_png(path: str) -> np.ndarray:
    """A frame PNG as an RGB array; raises :class:`DamagedFileError` naming a file that
    cannot be read (empty, truncated, not a picture)."""
    import imageio.v3 as iio

    _check_signature(path, (b"\x89PNG\r\n\x1a\n",), "PNG")
    try:
        img = iio.imread(path, extension=".png")
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        return img[..., :3]
    except FileNotFoundError:
        raise
    except Exception as exc:  # imageio raises many kinds for a bad file
        raise DamagedFileError(path, f"not a readable PNG: {_first_line(exc)}") from None


def check_gif(path: str) -> int:
    """The number of frames of a GIF; raises :class:`DamagedFileError` for one that cannot be read."""
    import imageio.v3 as iio

    _check_signature(path, (b"GIF87a", b"GIF89a"), "GIF")
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) != b";":  # every whole GIF ends with its trailer byte
            raise DamagedFileError(path, "a GIF cut short (no trailer)")
    try:
        frames = iio.improps(path, index=None, extension=".gif").shape[0]
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise DamagedFileError(path, f"not a readable GIF: {_first_line(exc)}") from None
    if frames < 1:
        raise DamagedFileError(path, "a GIF without frames")
    return int(frames)
