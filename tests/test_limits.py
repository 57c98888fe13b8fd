"""The server-wide cap on heavy jobs: a second job waits (with a message), a stuck queue gives up."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest

from cellkit import limits
from cellkit.errors import CellkitError
from cellkit.limits import JobLimiter, heavy_job


def test_second_job_queues_with_a_message_until_the_first_ends():
    lim = JobLimiter(1)
    started, release = threading.Event(), threading.Event()
    order: list[str] = []
    shown: list[str] = []

    @contextmanager
    def waiting(message: str):
        shown.append(message)
        yield

    def first():
        with lim.job(timeout=10):
            order.append("first start")
            started.set()
            release.wait(10)
            order.append("first end")

    def second():
        with lim.job(timeout=10, waiting=waiting):
            order.append("second start")

    a = threading.Thread(target=first)
    a.start()
    assert started.wait(10)
    b = threading.Thread(target=second)
    b.start()
    for _ in range(200):  # until the second job is queued
        if lim.waiting:
            break
        time.sleep(0.01)
    assert lim.waiting == 1 and lim.running == 1 and order == ["first start"]
    release.set()
    a.join(10)
    b.join(10)
    assert order == ["first start", "first end", "second start"]
    assert shown == ["Waiting for another analysis to finish (1 running, 1 waiting)…"]
    assert lim.running == 0 and lim.waiting == 0


def test_a_job_that_waits_too_long_gives_up_with_one_line():
    lim = JobLimiter(1)
    held, done = threading.Event(), threading.Event()

    def hold():
        with lim.job():
            held.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(10)
    busy = r"server busy: waited 0 s for a free analysis slot \(1 in use\)"
    with pytest.raises(CellkitError, match=busy), lim.job(timeout=0.05):
        pass
    done.set()
    t.join(10)
    with lim.job(timeout=0.05):  # the slot is free again, and the failed wait left nothing behind
        assert lim.running == 1 and lim.waiting == 0


def test_nested_jobs_in_one_thread_take_one_slot():
    lim = JobLimiter(1)
    with lim.job(timeout=0.1), lim.job(timeout=0.1):
        assert lim.running == 1
    assert lim.running == 0


def test_an_error_inside_a_job_frees_its_slot():
    lim = JobLimiter(1)
    with pytest.raises(RuntimeError), lim.job(timeout=0.1):
        raise RuntimeError("analysis failed")
    with lim.job(timeout=0.1):
        pass


def test_heavy_job_is_sized_by_the_environment(monkeypatch):
    monkeypatch.setenv("CELLKIT_MAX_HEAVY_JOBS", "3")
    limits.reset()
    try:
        with heavy_job(timeout=1):
            assert limits.limiter().slots == 3 and limits.limiter().running == 1
        monkeypatch.setenv("CELLKIT_MAX_HEAVY_JOBS", "0")
        limits.reset()
        with pytest.raises(CellkitError, match="CELLKIT_MAX_HEAVY_JOBS: expected a positive whole number"):
            heavy_job()
    finally:
        limits.reset()
