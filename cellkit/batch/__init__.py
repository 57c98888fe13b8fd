"""Batch analysis of whole archives: resumable jobs on one machine (process pool) or on Ray.

``find_tasks`` lists the images, ``run_batch`` analyses what is not done yet into a job folder and
rebuilds its ``summary.csv`` and ``cells.parquet``; ``import_job`` loads a finished job into the database.
"""

from cellkit.batch.engines import ENGINES
from cellkit.batch.importer import import_job
from cellkit.batch.job import BatchReport, job_settings, read_job, run_batch
from cellkit.batch.tasks import Task, find_tasks

__all__ = ["ENGINES", "BatchReport", "Task", "find_tasks", "import_job", "job_settings", "read_job", "run_batch"]
