"""Engines that run a job's :class:`~cellkit.batch.worker.Worker` over its tasks.

- ``local``: a process pool on this machine (spawned processes, models loaded once per worker, torch
  threads per worker set so the workers share the cores); one worker runs in this process.
- ``ray``: Ray Data, ``map_batches`` with the Worker as an actor class (models loaded once per actor),
  on ``ray.init()`` here or on a cluster (``address`` or ``RAY_ADDRESS``). Ray is an optional extra.

Both call ``on_done(status_row)`` once per finished image, in the order images finish.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from cellkit.batch.tasks import Task
from cellkit.batch.worker import STATUS_COLUMNS, Worker
from cellkit.errors import CellkitError

ENGINES = ("local", "ray")
OnDone = Callable[[dict[str, Any]], None]


def default_threads(workers: int) -> int:
    """Torch threads per worker: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


# ---- local -------------------------------------------------------------------------------------------
_WORKER: Worker | None = None


def watch_parent(parent: int, poll: float = 1.0) -> threading.Thread:
    """Exit this process when ``parent`` is gone (killed with -9 or -TERM): a worker of a killed batch must not live
    on, holding a model's gigabyte, as an orphan. Polls ``os.getppid()`` from a daemon thread."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(0)  # the parent is gone: its results go nowhere, and the next run redoes these images

    thread = threading.Thread(target=watch, name="cellkit-parent-watch", daemon=True)
    thread.start()
    return thread


def _init_local(out: str, settings: dict[str, Any], threads: int, parent: int) -> None:
    global _WORKER
    watch_parent(parent)
    _WORKER = Worker(out, settings, threads)


def _run_local(task: dict[str, Any]) -> dict[str, Any]:
    assert _WORKER is not None
    return _WORKER(task)


def run_local(
    tasks: Sequence[Task], out: str, settings: dict[str, Any], workers: int, threads: int, on_done: OnDone,
    models: Any = None,
) -> None:  # fmt: skip
    """Analyse ``tasks`` with ``workers`` processes (1: in this process, with ``models`` if given)."""
    if workers <= 1:
        worker = Worker(out, settings, threads, models=models)
        for task in tasks:
            on_done(worker(task))
        return
    import multiprocessing as mp

    pending = [t.to_dict() for t in reversed(tasks)]
    ctx = mp.get_context("spawn")  # never fork a process that holds torch threads
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_local, initargs=(out, settings, threads, os.getpid())
    ) as pool:
        running = set()
        while pending or running:
            while pending and len(running) < 2 * workers:  # a short queue: a kill loses at most this much work
                running.add(pool.submit(_run_local, pending.pop()))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                on_done(fut.result())  # a CellkitError (e.g. the folder became unwritable) stops the job


# ---- ray -----------------------------------------------------------------------------------------------
class RayWorker:
    """Ray Data actor: one Worker per actor; each call takes a batch of tasks and returns their status rows."""

    def __init__(self, out: str, settings: dict[str, Any], threads: int):
        self.worker = Worker(out, settings, threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = [
            self.worker(Task(str(r), str(p), str(m), str(e)))
            for r, p, m, e in zip(batch["ref"], batch["path"], batch["member"], batch["error"], strict=True)
        ]
        return {c: [row[c] for row in rows] for c in STATUS_COLUMNS}


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send the process's stderr (file descriptor 2, which C++ code writes to) to the null device for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why ``host:port`` (or ``ray://host:port``) takes no TCP connection, or None (also for ``auto`` and the like)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None  # "auto", "local": Ray finds the cluster itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None


def ray_init(address: str | None, workers: int, threads: int) -> Any:
    """Connect to a Ray cluster (``address``, else ``RAY_ADDRESS``) or start a local instance; telemetry off."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the core's own warnings go to Ray's log files
    try:
        import ray
        import ray.data
    except ImportError:
        raise CellkitError(
            "--engine ray needs Ray, an optional extra: pip install -r requirements-cluster.txt (or -e .[cluster])"
        ) from None
    address = address or os.environ.get("RAY_ADDRESS") or None
    problem = _unreachable(address) if address else None
    if problem:  # Ray itself would retry for minutes before it said anything
        raise CellkitError(
            f"cannot reach the Ray cluster at {address}: {problem}; start it (`ray start --head`) "
            "or leave out --address and RAY_ADDRESS to run on this machine"
        )
    import logging

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if address:
            kwargs["address"] = address
        else:
            kwargs.update(num_cpus=workers * threads, object_store_memory=256 * 1024 * 1024)
        try:
            with _quiet_stderr():  # Ray's core says on stderr that it read RAY_BACKEND_LOG_LEVEL
                ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or "a local Ray instance"
            raise CellkitError(f"cannot start or reach {where}: {str(exc).splitlines()[0]}") from None
    return ray


def run_ray(
    tasks: Sequence[Task], out: str, settings: dict[str, Any], workers: int, threads: int, on_done: OnDone,
    address: str | None = None,
) -> None:  # fmt: skip
    """Analyse ``tasks`` with Ray Data: ``workers`` actors of ``threads`` CPUs each."""
    ray = ray_init(address, workers, threads)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # cellkit shows its own progress
    ctx.print_on_execution_start = False
    ds = ray.data.from_items([t.to_dict() for t in tasks], override_num_blocks=max(1, min(len(tasks), 8 * workers)))
    ds = ds.map_batches(
        RayWorker,
        fn_constructor_kwargs={"out": out, "settings": settings, "threads": threads},
        batch_size=1,
        concurrency=workers,
        num_cpus=threads,
    )
    for row in ds.iter_rows():
        on_done({c: (row[c].item() if hasattr(row[c], "item") else row[c]) for c in STATUS_COLUMNS})
