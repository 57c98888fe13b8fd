"""The per-image function of a batch job, the same for every engine: read, analyse, write the record.

A :class:`Worker` loads the job's models once (per process, or per Ray actor) and then analyses one
task after another. It writes each image's record itself, so the engine only passes small status rows.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cellkit.batch.outputs import summary_row, write_record
from cellkit.batch.tasks import Task
from cellkit.errors import CellkitError

STATUS_COLUMNS = ("key", "path", "status", "error", "wbc", "rbc", "platelet")


def set_threads(threads: int) -> None:
    """Torch and OpenCV threads of this process (workers share the cores instead of over-subscribing them)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


class Worker:
    """Analyses tasks of one job with models loaded once. ``settings`` is the job's (see ``JobSettings``)."""

    def __init__(self, out: str | Path, settings: dict[str, Any], threads: int | None = None, models: Any = None):
        from cellkit.pipeline import ModelChoice, load_models

        if threads:
            set_threads(threads)
        self.out = Path(out)
        self.settings = settings
        choice = settings["models"]
        self.models = models or load_models(
            ModelChoice(choice["detector"], choice.get("classifier"), choice.get("rbc_model"))
        )

    def __call__(self, task: Task | dict[str, Any]) -> dict[str, Any]:
        """Analyse one image, write its record, return its status row (``STATUS_COLUMNS``)."""
        task = task if isinstance(task, Task) else Task.from_dict(task)
        record = self.analyse(task)
        write_record(self.out, record)
        row = summary_row(record)  # the summary's counts (white cells without NRBC), never a second rule
        status = {k: record.get(k, "") for k in ("key", "path", "status", "error")}
        return {**status, **{c: int(row[c] or 0) for c in ("wbc", "rbc", "platelet")}}

    def analyse(self, task: Task) -> dict[str, Any]:
        """The record of one image: status ``ok`` with the full result, or ``error`` with one line saying why."""
        from cellkit.io import read_image, read_zip_member
        from cellkit.slide import analyze

        record: dict[str, Any] = {
            "key": task.key,
            "path": task.ref,
            "status": "error",
            "error": task.error,
            "source": {"path": task.path, "member": task.member, "stamp": task.stamp()},
            "worker": {"pid": os.getpid(), "host": os.uname().nodename},
        }
        t0 = time.perf_counter()
        try:
            if task.error:
                raise CellkitError(task.error)
            if task.member:
                item = read_zip_member(task.path, task.member, name=task.ref)  # named as the user gave it
                if item.error:
                    raise CellkitError(item.error)
                image = item.take()
            else:
                image = read_image(task.path, name=task.ref)
            t1 = time.perf_counter()
            m = self.models
            result = analyze(
                image,
                m.detector,
                m.classifier,
                self.settings.get("tile"),
                self.settings.get("overlap"),
                name=Path(task.ref).name,
                by_class=m.by_class,
            )
            del image
        except CellkitError as exc:  # the file's name first, as in every other error row
            name = Path(task.ref).name
            record["error"] = str(exc) if name in str(exc) else f"{task.ref}: {exc}"
        except MemoryError:
            record["error"] = f"{task.ref}: out of memory while analysing it; try fewer --workers"
        except Exception as exc:  # one image's failure is its row; the job goes on
            record["error"] = f"{task.ref}: analysis failed ({type(exc).__name__}: {exc})"
        else:
            from cellkit.rbc_grading import scale_warning

            forms, red = result.composition("rbc"), m.by_class.get("rbc")
            withheld = scale_warning(result, red.spec) if forms and red is not None else ""  # the Red cells tab rule
            record.update(status="ok", error="", result=result.to_dict(), rbc_forms=forms, rbc_forms_withheld=withheld)
            record["timings"] = {
                "read_s": round(t1 - t0, 4),
                **result.timings,
                "total_s": round(time.perf_counter() - t0, 4),
            }
        record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        return record
