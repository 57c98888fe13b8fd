"""A server-wide cap on heavy jobs (decoding, analysing, classifying uploads): the rest wait in turn.

One process serves every browser session, so two large uploads at once could take all memory.
Pages wrap their heavy work in :func:`heavy_job`; at most ``CELLKIT_MAX_HEAVY_JOBS`` run at once,
the others wait (showing a message through ``waiting``) up to ``CELLKIT_HEAVY_JOB_TIMEOUT_S`` and
then get a CellkitError saying the server is busy. Nested use in one thread takes one slot only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from cellkit import config
from cellkit.errors import CellkitError

WAITING_MESSAGE = "Waiting for another analysis to finish ({running} running, {waiting} waiting)…"


class JobLimiter:
    """At most ``slots`` jobs at once; further ones queue (FIFO-ish, as threads wake)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise CellkitError(f"heavy jobs: expected at least 1 slot, got {slots}")
        self.slots = slots
        self._sem = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self._local = threading.local()
        self.running = 0
        self.waiting = 0

    @contextmanager
    def job(
        self,
        timeout: float | None = None,
        waiting: Callable[[str], AbstractContextManager[object]] | None = None,
    ) -> Iterator[None]:
        """Hold one slot for the block; wait for one first when all are taken.

        ``waiting(message)`` gives a context manager shown while queued (e.g. ``st.spinner``).
        Raises CellkitError when no slot frees up within ``timeout`` seconds (None: wait forever).
        """
        depth = getattr(self._local, "depth", 0)
        if depth:  # already holding a slot in this thread: nested call, no second slot
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        if not self._sem.acquire(blocking=False):
            with self._lock:
                self.waiting += 1
                message = WAITING_MESSAGE.format(running=self.running, waiting=self.waiting)
            try:
                with waiting(message) if waiting is not None else nullcontext():
                    got = self._sem.acquire(timeout=timeout)
            finally:
                with self._lock:
                    self.waiting -= 1
            if not got:
                raise CellkitError(
                    f"server busy: waited {timeout:.0f} s for a free analysis slot ({self.slots} in use); "
                    "try again in a minute"
                )
        with self._lock:
            self.running += 1
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            with self._lock:
                self.running -= 1
            self._sem.release()


_limiter: JobLimiter | None = None
_limiter_lock = threading.Lock()


def limiter() -> JobLimiter:
    """The process-wide limiter, sized by ``CELLKIT_MAX_HEAVY_JOBS`` when first used."""
    global _limiter
    with _limiter_lock:
        if _limiter is None:
            _limiter = JobLimiter(config.max_heavy_jobs())
        return _limiter


def reset() -> None:
    """Forget the process-wide limiter (tests; a new one reads the settings again)."""
    global _limiter
    with _limiter_lock:
        _limiter = None


def heavy_job(
    timeout: float | None = None,
    waiting: Callable[[str], AbstractContextManager[object]] | None = None,
) -> AbstractContextManager[None]:
    """Hold one of the server's heavy-job slots for a ``with`` block (see :meth:`JobLimiter.job`).

    ``timeout`` defaults to ``CELLKIT_HEAVY_JOB_TIMEOUT_S``. In a Streamlit page:
    ``with heavy_job(waiting=st.spinner): analyze(...)``.
    """
    return limiter().job(config.heavy_job_timeout_s() if timeout is None else timeout, waiting)
