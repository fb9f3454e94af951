"""A background process for the back half (layouts, metrics, frames, GIFs).

With ``background=True`` the training loop waits only for the capture: the snapshots go
to one worker process that measures and draws them in order while training goes on, and
keeps the films (previous layouts, axis limits) between snapshots exactly as the
in-process pipeline does.

The worker is a fresh interpreter running ``python -m layerwatch.worker``: it imports
layerwatch, never the user's script, so a training script without an
``if __name__ == "__main__":`` guard is not run a second time. Jobs and answers travel
over two pipes. If the worker dies (the out-of-memory killer, say), the death is reported,
a new worker takes up the stored run and the snapshots it had not finished are sent again;
if that one dies too, the training process draws the rest itself.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger("layerwatch")

# Deaths after which the training process stops starting workers and draws itself.
MAX_DEATHS = 2


@dataclass
class Result:
    """What the worker made of one snapshot."""

    key: Any
    logs: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    error: str | None = None
    # The snapshot as it was handed over (set in the main process): what the integrations
    # read, since keep_vectors="drift" may have dropped its stored vectors meanwhile.
    snaps: dict | None = None


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str) -> type:
    import importlib

    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _serve(conn_in: Connection, conn_out: Connection) -> None:
    import matplotlib

    matplotlib.use("Agg")
    kind, spec = conn_in.recv()
    if kind != "init":
        raise RuntimeError(f"the worker expected its settings first, got {kind!r}")
    from .pipeline import Pipeline
    from .store import RunStore

    # The run's measurements, by the classes the training process used (a measurement of the
    # user's own need not be registered here: the pipeline is handed its instances).
    classes = [_load_class(path) for path in spec["measurements"]]
    config = spec["config"]
    pipe = Pipeline(
        RunStore(spec["root"]), config, spec["label_names"], regression=spec["regression"],
        reference_split=spec["reference_split"], measurements=[cls(config) for cls in classes],
    )
    pipe.ctx.log_failures = False  # the training process reports them, once per snapshot
    conn_out.send(("ready", None))
    while True:
        try:
            msg = conn_in.recv()
        except EOFError:  # the training process went away
            return
        kind = msg[0]
        if kind == "close":
            conn_out.send(("closed", None))
            return
        if kind == "restore":
            try:
                pipe.restore(msg[1])
                conn_out.send(("restored", None))
            except Exception as exc:
                conn_out.send(("restored", f"{type(exc).__name__}: {exc}"))
            continue
        _, key, snaps = msg
        try:
            logs = pipe.process(snaps, key)
            conn_out.send(("done", Result(key, logs, list(pipe.failures))))
        except Exception as exc:
            conn_out.send(("done", Result(key, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")))


def main() -> None:  # pragma: no cover - runs in the worker process
    conn_in = Connection(int(sys.argv[1]), writable=False)
    conn_out = Connection(int(sys.argv[2]), readable=False)
    try:
        _serve(conn_in, conn_out)
    finally:
        conn_in.close()
        conn_out.close()


class WorkerDied(RuntimeError):
    pass


class BackgroundWorker:
    """One worker process that runs :class:`~layerwatch.pipeline.Pipeline` jobs in order.

    Args:
        root, config, label_names, regression, reference_split: As for the pipeline.
        measurements: The measurement classes (importable by module and name).
    """

    def __init__(self, root: str, config: Any, label_names: Any, regression: bool, reference_split: str | None, measurements: list[type]):
        for cls in measurements:
            if cls.__module__ == "__main__":
                raise ValueError(
                    f"the measurement {cls.__qualname__} is defined in the script that runs training, which the "
                    "background worker does not import; define it in a module of its own, or pass background=False"
                )
        self._spec = {
            "root": root, "config": config, "label_names": label_names, "regression": regression,
            "reference_split": reference_split, "measurements": [_class_path(c) for c in measurements],
        }
        self.pending: list[tuple[Any, dict]] = []
        self.deaths = 0
        self.given_up = False
        self._proc: subprocess.Popen | None = None
        self._start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        child_in, parent_out = os.pipe()
        parent_in, child_out = os.pipe()
        env = dict(os.environ)
        # The worker must import what this process imports (layerwatch, and the modules
        # of the run's measurements) but never run the user's script.
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.setdefault("MPLBACKEND", "Agg")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "layerwatch.worker", str(child_in), str(child_out)],
                pass_fds=(child_in, child_out), env=env, close_fds=True,
            )
        finally:
            os.close(child_in)
            os.close(child_out)
        self._send = Connection(parent_out, readable=False)
        self._recv = Connection(parent_in, writable=False)
        self._send.send(("init", self._spec))
        self._expect("ready")

    def _expect(self, kind: str) -> Any:
        while True:
            try:
                got, value = self._recv.recv()
            except (EOFError, OSError):
                raise WorkerDied(self._exit_text()) from None
            if got == kind:
                return value

    def _exit_text(self) -> str:
        code = self._proc.wait(timeout=30) if self._proc is not None else None
        if code is not None and code < 0:
            import signal

            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            hint = " (the out-of-memory killer?)" if -code == 9 else ""
            return f"killed by signal {name}{hint}"
        return f"exit code {code}"

    def restore(self, up_to_step: int | None) -> None:
        self._send.send(("restore", up_to_step))
        error = self._expect("restored")
        if error:
            logger.warning("layerwatch: the background worker could not take up the stored run (%s)", error)

    def submit(self, key: Any, snaps: dict) -> None:
        self.pending.append((key, snaps))
        try:
            self._send.send(("process", key, snaps))
        except (OSError, EOFError, BrokenPipeError):
            pass  # noticed, and the job sent again, when its answer is awaited

    def finished(self, block: bool = False) -> list[Result]:
        """Answers of the jobs that are done, in order (all of them, waiting, when ``block``).

        A dead worker is reported and replaced, and its unfinished jobs are sent again;
        after :data:`MAX_DEATHS` deaths :attr:`given_up` is set and the unfinished jobs stay
        in :attr:`pending` for the caller to run itself.
        """
        out: list[Result] = []
        while self.pending and not self.given_up:
            try:
                if not block and not self._recv.poll(0):
                    if self._proc is not None and self._proc.poll() is not None and not self._recv.poll(0):
                        raise WorkerDied(self._exit_text())
                    break
                got, value = self._recv.recv()
            except (EOFError, OSError, WorkerDied) as exc:
                self._replace(str(exc) if isinstance(exc, WorkerDied) else self._exit_text())
                continue
            if got == "done":
                value.snaps = next((s for k, s in self.pending if k == value.key), None)
                self.pending = [(k, s) for k, s in self.pending if k != value.key]
                out.append(value)
        return out

    def _replace(self, why: str) -> None:
        self.deaths += 1
        self._close_pipes()
        if self.deaths >= MAX_DEATHS:
            logger.warning(
                "layerwatch: the background worker died again (%s); the training process draws the %d snapshot(s) "
                "left and the rest of the run itself", why, len(self.pending),
            )
            self.given_up = True
            return
        logger.warning(
            "layerwatch: the background worker died (%s); a new one takes up the run and redoes %d snapshot(s)",
            why, len(self.pending),
        )
        todo = list(self.pending)
        self.pending = []
        try:
            self._start()
            first = min((getattr(k, "step", 0) for k, _ in todo), default=None)
            self.restore(None if first is None else first - 1)
        except WorkerDied as exc:
            self.pending = todo
            self._replace(str(exc))
            return
        for key, snaps in todo:
            self.submit(key, snaps)

    def _close_pipes(self) -> None:
        for conn in (getattr(self, "_send", None), getattr(self, "_recv", None)):
            try:
                if conn is not None:
                    conn.close()
            except OSError:
                pass

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            if self._proc.poll() is None:
                self._send.send(("close",))
                self._expect("closed")
        except (OSError, EOFError, WorkerDied):
            pass
        finally:
            self._close_pipes()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self._proc.kill()
            self._proc = None


if __name__ == "__main__":  # pragma: no cover
    # Run the module's own copy (not this __main__ one), so that what it sends back
    # unpickles as layerwatch.worker.Result in the training process.
    import layerwatch.worker

    layerwatch.worker.main()
