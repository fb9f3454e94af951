"""The run directory's lifecycle: the files layerwatch wrote there, who holds it, what goes when.

* :class:`RunDirectory`: the folder's bookkeeping, which every :class:`~layerwatch.store.RunStore`
  holds as ``store.directory``: the manifest of files layerwatch wrote
  (``.layerwatch-files``, appended to by every writer), the lock that serialises writers
  of shared files (``.layerwatch-lock``), the claim of one run on the folder
  (``.layerwatch-owner``), and the removal of temporary files left by writers that died.
* :func:`holds_run`, :func:`owned_files`, :func:`remove_run` (``overwrite=True``) and
  :func:`supersede` (a resume from a checkpoint): what a run directory holds, read
  through its store.

Files the user put in the folder are never removed: only what the manifest names (or, in
a folder without one, files of layerwatch's own naming).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any, Iterator

from .files import DamagedFileError, RunDirectoryInUse, abandoned_temporary, atomic_write_text, is_inside, table_text
from .snapshot import SnapshotKey

__all__ = ["RunDirectory", "holds_run", "owned_files", "remove_run", "supersede", "MANIFEST_FILE", "SUPERSEDED"]

logger = logging.getLogger("layerwatch")

MANIFEST_FILE = ".layerwatch-files"
LOCK_FILE = ".layerwatch-lock"
OWNER_FILE = ".layerwatch-owner"
SUPERSEDED = "superseded"

# The run directories this process holds, by real path: a run of this process that never
# finished (a notebook cell whose training raised) gives its folder up to the next one.
_CLAIMS: dict[str, Any] = {}


class RunDirectory:
    """The manifest, the lock and the claim of one run directory (``root``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self._recorded: set[str] = set()
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._lock_fh = None
        self._claim_fh = None

    # -- the manifest ----------------------------------------------------------------
    def record(self, path: str) -> None:
        """Note ``path`` in the manifest of files layerwatch wrote (``overwrite`` removes these)."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root)).replace(os.sep, "/")
        if rel in self._recorded or rel == MANIFEST_FILE:
            return
        os.makedirs(self.root, exist_ok=True)
        # One short line appended with O_APPEND: several writers (the training process, a
        # background worker, `layerwatch render`) may record at once without losing lines.
        with open(os.path.join(self.root, MANIFEST_FILE), "a", encoding="utf-8") as fh:
            fh.write(rel + "\n")
        self._recorded.add(rel)

    def forget(self) -> None:
        """Forget what this process recorded (the files were removed: record them anew)."""
        self._recorded.clear()

    def lists_files(self) -> bool:
        """Whether the manifest names a file other than the lock (taken before anything is written)."""
        try:
            with open(os.path.join(self.root, MANIFEST_FILE), encoding="utf-8", errors="replace") as fh:
                return any(line.strip() not in ("", LOCK_FILE) for line in fh)
        except OSError:
            return False

    def listed(self) -> set[str]:
        """The absolute paths the manifest names (lines that lead out of the folder skipped)."""
        root = os.path.abspath(self.root)
        paths: set[str] = set()
        try:
            with open(os.path.join(root, MANIFEST_FILE), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    rel = line.strip()
                    if rel and not rel.startswith("/") and ".." not in rel.split("/"):
                        paths.add(os.path.join(root, *rel.split("/")))
        except OSError:
            pass
        return paths

    # -- temporary files -------------------------------------------------------------
    def clean_temporary(self) -> int:
        """Remove temporary files left by writers that died (a kill mid-write); returns how many."""
        removed = 0
        if not os.path.isdir(self.root):
            return 0
        now = time.time()
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
            for f in files:
                path = os.path.join(folder, f)
                try:
                    age = now - os.path.getmtime(path)
                except OSError:
                    continue
                if abandoned_temporary(f, age):
                    try:
                        os.remove(path)
                        removed += 1
                    except OSError:
                        pass
        if removed:
            logger.info("layerwatch: removed %d temporary file(s) left by a run that was killed", removed)
        return removed

    # -- the lock and the claim --------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory's lock (between processes and threads; reentrant).

        Writers of files that several processes rewrite (GIFs, tables, the report) hold
        it, so that the last writer always works from everything written before it.
        """
        with self._lock:
            if self._lock_depth == 0:
                self._lock_fh = self._open_lock()
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fh is not None:
                    self._lock_fh.close()
                    self._lock_fh = None

    def _open_lock(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: threads are still serialised
            return None
        os.makedirs(self.root, exist_ok=True)
        path = os.path.join(self.root, LOCK_FILE)
        self.record(path)
        fh = open(path, "a+")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        return fh

    def claim(self) -> None:
        """Hold the run directory for one run until :meth:`release` (or the process ends).

        Two runs started into the same folder would mix their snapshots; the first to
        claim it wins and every other one gets :class:`RunDirectoryInUse` before it
        checks, writes or removes anything. The claim is an exclusive ``flock`` on
        ``.layerwatch-owner``, held as long as the run: the kernel drops it when the
        holder dies however it dies (a kill, a crash, a lost node), so a stale claim never
        blocks a later run. A run of this same process that never released its claim (a
        training that raised in a notebook) gives it up to the new one, with a warning.
        Where ``flock`` does not exist (not POSIX) nothing is claimed.
        """
        if self._claim_fh is not None:
            return
        try:
            import fcntl
        except ImportError:  # not POSIX: no claim
            return
        os.makedirs(self.root, exist_ok=True)
        real = os.path.realpath(self.root)
        stale = _CLAIMS.pop(real, None)
        if stale is not None and not stale.closed:
            logger.warning(
                "layerwatch: a run of this process that did not finish (a training that raised?) still held %s; "
                "the new run takes it over", self.root,
            )
            stale.close()
        path = os.path.join(self.root, OWNER_FILE)
        fh = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            try:
                who = json.loads(holder)
                who = f" (process {who['pid']} on {who['host']}, since {who['since']})"
            except (ValueError, KeyError, TypeError):
                who = ""
            raise RunDirectoryInUse(
                f"output_dir={self.root!r} is in use: another layerwatch run that is still going holds it{who}, and "
                "two runs in one folder would mix their snapshots; pass another output_dir, or wait until that run ends"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        fh.flush()
        # Not in the manifest: overwrite=True must never remove the file the claim is held on.
        self._claim_fh = fh
        _CLAIMS[real] = fh

    def release(self) -> None:
        """Give up the claim of :meth:`claim` (the run ended)."""
        fh, self._claim_fh = self._claim_fh, None
        if fh is None:
            return
        real = os.path.realpath(self.root)
        if _CLAIMS.get(real) is fh:
            del _CLAIMS[real]
        fh.close()


# -- what a run directory holds, read through its store (a RunStore) ---------------------------
def holds_run(store: Any) -> bool:
    """Whether the folder holds a layerwatch run, or files of one (even without run.json)."""
    if os.path.exists(store.run_path) and not store.foreign_run_file():
        return True
    if store.directory.lists_files():
        return True
    return any(store.keys(split) for split in store.splits())


def owned_files(store: Any) -> list[str]:
    """Every file layerwatch wrote in ``store``'s folder, as absolute paths (from the
    manifest, or, for a folder without one, the files of its own naming)."""
    root = os.path.abspath(store.root)
    if store.directory.lists_files():
        paths = store.directory.listed()
    else:
        paths = set()
        for split in store.splits():
            for kind, ext in (("embeddings", ".npz"), ("layouts", ".npz"), ("frames", ".png")):
                for key in store.keys(split, kind):
                    paths.add(store.array_path(kind, split, key, ext))
            paths.add(store.gif_path(split))
        if os.path.exists(store.run_path) and not store.foreign_run_file():
            paths.add(store.run_path)
    paths.add(os.path.join(root, MANIFEST_FILE))
    paths.add(os.path.join(root, LOCK_FILE))
    return sorted(p for p in paths if os.path.lexists(p))


def remove_run(store: Any) -> int:
    """Remove every file layerwatch wrote in ``store``'s folder, and the folders it leaves empty.

    Files the user put in the folder (their own GIFs, notes, another tool's files) stay.
    Returns the number of files removed.
    """
    root = os.path.realpath(store.root)
    removed = 0
    folders: set[str] = set()
    for path in owned_files(store):
        if not is_inside(root, os.path.dirname(path)):
            continue  # never follow a link out of the run directory
        if os.path.isfile(path) or os.path.islink(path):
            os.remove(path)
            removed += 1
            folders.add(os.path.dirname(path))
    for folder in sorted(folders, key=len, reverse=True):
        while os.path.realpath(folder).startswith(root + os.sep):
            try:
                os.rmdir(folder)
            except OSError:
                break
            folder = os.path.dirname(folder)
    store.directory.forget()
    return removed


def _keyed_files(store: Any) -> Iterator[tuple[str, SnapshotKey]]:
    """``(path, key)`` of every file layerwatch wrote whose name is a snapshot key, in any
    folder of the run directory (``superseded/``, hidden folders and links excepted)."""
    root = store.root
    if not os.path.isdir(root):
        return
    owned = set(owned_files(store)) if store.directory.lists_files() else None
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and not os.path.islink(os.path.join(folder, d))
            and not (folder == root and d == SUPERSEDED)
        )
        for f in sorted(files):
            key = SnapshotKey.parse(os.path.splitext(f)[0])
            path = os.path.join(folder, f)
            if key is not None and (owned is None or os.path.abspath(path) in owned):
                yield path, key


def _tables(store: Any) -> list[str]:
    # Tables live directly in the run directory (``table_path``), whatever measurement wrote them.
    if not os.path.isdir(store.root):
        return []
    owned = set(owned_files(store))
    return sorted(
        f for f in os.listdir(store.root)
        if f.endswith(".csv") and os.path.isfile(os.path.join(store.root, f))
        and os.path.abspath(os.path.join(store.root, f)) in owned
    )


def supersede(store: Any, after_step: int, after_epoch: float | None = None) -> list[str]:
    """Move everything of the snapshots taken after ``after_step`` to ``superseded/<time>/``.

    A run resumed from a checkpoint goes on from that checkpoint's step; snapshots
    that a killed (or longer) run took after it belong to a course of training that
    no longer exists. One rule holds for every measurement, whatever its folders: a
    file named by a snapshot key (``epoch_003.png`` in ``attention_frames/entropy/``,
    any depth) is moved when that snapshot came after the checkpoint, and so is every
    row of a table with a ``step`` after it (its owner stays). When that snapshot came is
    read from the name (``..._step_0000012``), else from the step stored in the embeddings
    of the snapshot of that name (any split), else from its epoch against ``after_epoch``
    (the checkpoint's epoch). Files are moved (never deleted), keeping their folders,
    so that the films hold one course of training. Returns the names of the
    snapshots moved.
    """
    stored: dict[str, int] = {}
    for split in store.splits():
        for key in store.keys(split):
            try:
                stored[key.name] = store.snapshot_key(split, key).step
            except (DamagedFileError, FileNotFoundError):
                continue

    def abandoned(key: SnapshotKey) -> bool:
        if key.with_step:
            return key.step > after_step
        if key.name in stored:
            return stored[key.name] > after_step
        if after_epoch is not None:
            return float(key.epoch) > float(after_epoch) + 1e-6
        return False

    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = os.path.join(store.root, SUPERSEDED, stamp)
    moved = set()
    with store.lock():
        for path, key in list(_keyed_files(store)):
            if not abandoned(key):
                continue
            dest = os.path.join(target, os.path.relpath(path, store.root))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(path, dest)
            moved.add(key.name)
        for table in _tables(store):
            try:
                rows = store.read_table(table)
            except DamagedFileError as exc:
                logger.warning("layerwatch: %s", exc)
                continue
            late = [r for r in rows if "step" in r and int(r["step"]) > after_step]
            if late:
                fields = list(rows[0].keys())
                store.write_text(store.table_path(table), table_text(fields, [r for r in rows if r not in late]))
                os.makedirs(target, exist_ok=True)
                atomic_write_text(os.path.join(target, table), table_text(fields, late))
    return sorted(moved)
