"""cellkit.batch: tasks from any input, per-image records, resume, error rows, summary and cell table, import.

In-process runs swap the models for deterministic doubles; the subprocess runs (a real SIGKILL, the
process pool, Ray) use the bundled models, as a user's job does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from _cli import run_cli
from _fakes import ColourDetector, tiny_classifier_for

import cellkit.classify
import cellkit.detect
from cellkit.batch import find_tasks, import_job, job_settings, read_job, run_batch
from cellkit.batch.outputs import record_path
from cellkit.errors import CellkitError
from cellkit.io import encode_png
from cellkit.pipeline import ModelChoice
from cellkit.store import Store
from cellkit.synth import make_smear

SETTINGS = job_settings(ModelChoice("detector_v2", "classifier_lite0_v4", "rbc_lite0_80"))


def _smears(folder: Path, n: int, size=(320, 240), seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        img, _b, _c = make_smear(*size, n_wbc=2, n_rbc=10, n_platelet=2, seed=seed + k)
        path = folder / f"s{k:03d}.png"
        path.write_bytes(encode_png(img))
        out.append(path)
    return out


@pytest.fixture
def fakes(monkeypatch):
    """The pipeline's loaders return the colour detector and tiny classifiers (the in-process worker)."""
    monkeypatch.setattr(cellkit.detect, "load_detector", lambda name=None: ColourDetector(tile=256, overlap=64))
    monkeypatch.setattr(cellkit.classify, "load_classifier", tiny_classifier_for)


@pytest.fixture
def inputs(tmp_path):
    """Three smears in a folder, one in a zip, one corrupt file, and a list naming one of them and a missing one."""
    folder = tmp_path / "in"
    smears = _smears(folder, 3)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with zipfile.ZipFile(tmp_path / "more.zip", "w") as zf:
        zf.writestr("day1/z.png", smears[0].read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text("# fields of day 2\nin/s001.png\n\nmissing.png\n")
    return folder, tmp_path / "more.zip", listing


# ---- tasks --------------------------------------------------------------------------------------------
def test_tasks_from_folders_zips_and_lists_each_image_once(inputs):
    folder, zipped, listing = inputs
    tasks = find_tasks([folder, zipped, listing])
    refs = [t.ref for t in tasks]
    assert refs[:4] == [str(folder / n) for n in ("broken.jpg", "s000.png", "s001.png", "s002.png")]
    assert f"{zipped}/day1/z.png" in refs
    assert refs.count(str(folder / "s001.png")) == 1  # named by the list too: still one task
    missing = [t for t in tasks if t.ref.endswith("missing.png")]
    assert len(missing) == 1 and "listed but not found" in missing[0].error
    assert len({t.key for t in tasks}) == len(tasks)


def test_tasks_refuse_missing_input_and_no_images(tmp_path):
    with pytest.raises(CellkitError, match="no such file"):
        find_tasks([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CellkitError, match="no images found"):
        find_tasks([tmp_path / "empty"])


def test_a_list_line_with_an_overlong_name_is_that_lines_error_not_the_jobs_end(tmp_path):
    _smears(tmp_path / "in", 1)
    listed = tmp_path / "list.txt"
    listed.write_text(f"{tmp_path / 'in'}\n{tmp_path / ('a' * 300 + '.png')}\n")
    tasks = find_tasks([listed])
    assert len(tasks) == 2 and not tasks[0].error and "file name too long" in tasks[1].error


def test_hostile_zip_is_one_error_task(tmp_path):
    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../etc/x.png", b"x")
    (task,) = find_tasks([bad])
    assert "unsafe path" in task.error


# ---- a job, in process ----------------------------------------------------------------------------------
def test_job_writes_records_summary_and_cells(fakes, inputs, tmp_path):
    folder, zipped, listing = inputs
    tasks = find_tasks([folder, zipped, listing])
    out = tmp_path / "job"
    report = run_batch(tasks, out, SETTINGS)
    assert (report.found, report.skipped, report.analysed) == (len(tasks), 0, len(tasks))
    assert report.failed == 2  # the corrupt file and the missing one: rows, the job went on
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns[:6]) == ["path", "status", "wbc", "rbc", "platelet", "error"]
    assert summary["path"].tolist() == [t.ref for t in tasks]
    bad = summary[summary.status == "error"]
    assert set(bad.path.map(lambda p: Path(p).name)) == {"broken.jpg", "missing.png"}
    assert bad.error.str.contains("not a readable image").any() and bad.wbc.isna().all()
    assert all(Path(p).name in e for p, e in zip(bad.path, bad.error, strict=True))  # every error names its file
    ok = summary[summary.status == "ok"]
    assert (ok.wbc >= 1).all() and (ok.rbc >= 5).all()
    assert any(c.startswith("wbc_") and c.endswith("_pct") for c in summary.columns)  # the differential
    cells = pd.read_parquet(out / "cells.parquet")
    assert len(cells) == int(ok[["wbc", "rbc", "platelet"]].sum().sum()) == report.n_cells
    assert set(cells.path) == set(ok.path)
    per_image = cells.groupby("path").size()
    for _, row in ok.iterrows():
        assert per_image[row.path] == row.wbc + row.rbc + row.platelet
    assert {"label", "shown_as", "x1"} <= set(cells.columns) and any(c.startswith("p_") for c in cells.columns)
    rec = json.loads(record_path(out, tasks[1].key).read_text())
    assert rec["status"] == "ok" and rec["result"]["models"]["detector"]["name"] == "colour-fake"
    assert {"read_s", "detect_s", "classify_s", "total_s"} <= set(rec["timings"])
    assert read_job(out)["settings"] == json.loads(json.dumps(SETTINGS))


def test_rerun_skips_done_redoes_changed_and_never_duplicates(fakes, tmp_path):
    smears = _smears(tmp_path / "in", 4)
    tasks = find_tasks([tmp_path / "in"])
    out = tmp_path / "job"
    run_batch(tasks[:2], out, SETTINGS)  # as if killed after two images
    first = record_path(out, tasks[0].key).stat().st_mtime_ns
    seen: list[tuple[int, int]] = []
    report = run_batch(tasks, out, SETTINGS, on_start=lambda todo, skipped: seen.append((todo, skipped)))
    assert seen == [(2, 2)] and (report.skipped, report.analysed) == (2, 2)
    assert record_path(out, tasks[0].key).stat().st_mtime_ns == first  # not analysed again
    assert pd.read_csv(out / "summary.csv")["path"].tolist() == [t.ref for t in tasks]
    img, _b, _c = make_smear(320, 240, n_wbc=1, n_rbc=3, seed=99)
    smears[0].write_bytes(encode_png(img))  # the file changed: it is analysed again
    report = run_batch(find_tasks([tmp_path / "in"]), out, SETTINGS)
    assert (report.skipped, report.analysed) == (3, 1)
    assert len(pd.read_csv(out / "summary.csv")) == 4


def test_errors_are_kept_unless_retried_or_the_file_changes(fakes, tmp_path):
    _smears(tmp_path / "in", 1)
    bad = tmp_path / "in" / "late.png"
    bad.write_bytes(b"not yet")
    out = tmp_path / "job"
    tasks = lambda: find_tasks([tmp_path / "in"])  # noqa: E731
    assert run_batch(tasks(), out, SETTINGS).failed == 1
    again = run_batch(tasks(), out, SETTINGS)
    assert (again.skipped, again.analysed, again.failed) == (2, 0, 1)  # the error row is kept, not retried
    retried = run_batch(tasks(), out, SETTINGS, retry_errors=True)
    assert (retried.skipped, retried.analysed, retried.failed) == (1, 1, 1)
    img, _b, _c = make_smear(320, 240, seed=5)
    bad.write_bytes(encode_png(img))  # fixed: a new size and time, so it is analysed again
    fixed = run_batch(tasks(), out, SETTINGS)
    assert (fixed.skipped, fixed.analysed, fixed.failed) == (1, 1, 0)
    assert (pd.read_csv(out / "summary.csv").status == "ok").all()


def test_folder_of_another_job_is_refused(fakes, tmp_path):
    tasks = find_tasks(_smears(tmp_path / "in", 1))
    run_batch(tasks, tmp_path / "job", SETTINGS)
    other = job_settings(ModelChoice("detector_v2"))
    with pytest.raises(CellkitError, match=r"other models .*detector_v2 \+ classifier_lite0_v4"):
        run_batch(tasks, tmp_path / "job", other)


def test_unwritable_out_is_one_line_before_any_work(fakes, tmp_path):
    tasks = find_tasks(_smears(tmp_path / "in", 1))
    (tmp_path / "file").write_text("x")
    with pytest.raises(CellkitError, match="is a file, not a folder"):
        run_batch(tasks, tmp_path / "file" / "job", SETTINGS)


# ---- the command ----------------------------------------------------------------------------------------
def test_cli_batch_then_import_is_idempotent(fakes, inputs, tmp_path, monkeypatch, capsys):
    folder, zipped, _listing = inputs
    db = tmp_path / "db.sqlite"
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{db}")
    out = tmp_path / "job"
    code, _o, err = run_cli(monkeypatch, capsys, "batch", folder, zipped, "--out", out, "--save", "--owner", "ann")
    assert code == 1 and "error:" in err and "broken.jpg" in err  # one failed image: exit 1, the rest done
    assert "batch job #1: 5 image(s) stored now, 5 in the job" in err
    code, _o, err = run_cli(monkeypatch, capsys, "import", out, "--owner", "ann")
    assert code == 0 and "0 image(s) stored now, 5 in the job" in err
    store = Store(f"sqlite:///{db}")
    (job,) = store.list_batch_jobs("ann")
    assert (job["images"], job["analysed"], job["errors"]) == (5, 4, 1)
    summary = pd.read_csv(out / "summary.csv")
    assert job["wbc"] == summary.wbc.sum() and job["rbc"] == summary.rbc.sum()
    items = store.batch_items(job["id"], "ann")
    zipped_item = next(i for i in items if i["member"])
    assert zipped_item["member"] == "day1/z.png" and zipped_item["source"] == str(zipped.resolve())
    opened = store.load_analysis(next(i["analysis_id"] for i in items if i["status"] == "ok"), owner="ann")
    assert len(opened.detections) > 0 and "classifier_rbc" in opened.models  # every model's provenance
    assert set(opened.taxonomies) == {"pbc", "rbc12"} and opened.display_name("burr_cell") == "Burr cell"
    assert store.list_batch_jobs("bob") == []  # another owner sees nothing
    with pytest.raises(CellkitError):
        store.batch_items(job["id"], "bob")


def test_cli_batch_bad_options_are_one_line(tmp_path, monkeypatch, capsys):
    _smears(tmp_path / "in", 1)
    for args, expected in [
        (["--engine", "spark"], "--engine: expected one of local, ray"),
        (["--workers", "0"], "--workers: expected 1 or more"),
        (["--threads", "-1"], "Invalid value for '--threads'"),
        (["--tile", "10"], "--tile: expected 64 to 8192"),
        (["--overlap", "5000"], "--overlap: expected below half the tile (320)"),  # of the detector card's tile
    ]:
        code, _o, err = run_cli(monkeypatch, capsys, "batch", tmp_path / "in", "--out", tmp_path / "o", *args)
        assert code == 2 and err.strip().count("\n") == 0 and expected in err, err
    assert not (tmp_path / "o" / "job.json").exists()  # a refused option never sticks to the job folder
    code, _o, err = run_cli(monkeypatch, capsys, "batch", tmp_path / "nope", "--out", tmp_path / "o")
    assert code == 2 and "no such file or folder" in err


def test_import_of_a_folder_that_is_no_job(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    code, _o, err = run_cli(monkeypatch, capsys, "import", tmp_path)
    assert code == 2 and "not a batch job folder" in err


def test_import_into_postgresql(postgres, fakes, tmp_path):
    out = tmp_path / "job"
    run_batch(find_tasks(_smears(tmp_path / "in", 3)), out, SETTINGS)
    store = Store(postgres.url)
    jid, added, total, unreadable, _ = import_job(out, store, "pat", chunk=2)
    assert unreadable == []
    assert (added, total) == (3, 3)
    assert import_job(out, store, "pat")[1] == 0  # idempotent
    (job,) = [j for j in store.list_batch_jobs("pat") if j["id"] == jid]
    assert job["analysed"] == 3 and job["wbc"] == pd.read_csv(out / "summary.csv").wbc.sum()


# ---- real processes, bundled models ---------------------------------------------------------------------
def _cellkit(*args: object, quiet: bool = False) -> subprocess.Popen:
    """``cellkit`` in its own process group; ``quiet``: output dropped (a job that is never read from must not
    block on a full pipe)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(
        [sys.executable, "-m", "cellkit", *map(str, args)],
        stdout=out, stderr=out, text=True, env=env, start_new_session=True,
    )  # fmt: skip


def test_killed_job_resumes_without_losing_or_duplicating(tmp_path):
    _smears(tmp_path / "in", 16, size=(480, 360))
    out = tmp_path / "job"
    job = _cellkit("batch", tmp_path / "in", "--out", out, "--workers", "2", "--rbc-model", "none", quiet=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "results").glob("*/*.json"))) < 3:
        assert job.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # the job and its workers, mid-way
    job.wait()
    done = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*/*.json")}
    assert 3 <= len(done) < 16 and not (out / "summary.csv").exists()
    again = _cellkit("batch", tmp_path / "in", "--out", out, "--workers", "2", "--rbc-model", "none")
    _stdout, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    skipped = int(err.split(" of 16 image(s) already done")[0].split()[-1])
    assert skipped >= len(done) - 2  # at most the two images in flight when killed are redone
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 16 and summary.path.is_unique and (summary.status == "ok").all()
    for name, mtime in done.items():  # what was done stays done
        assert next((out / "results").glob(f"*/{name}")).stat().st_mtime_ns == mtime
    assert len(pd.read_parquet(out / "cells.parquet")) == summary[["wbc", "rbc", "platelet"]].sum().sum()


def test_sigterm_ends_a_job_with_one_line_and_it_resumes(tmp_path):
    """`kill` (SIGTERM) of `batch --workers 2` died without a word but multiprocessing's leaked-semaphore warnings."""
    _smears(tmp_path / "in", 16, size=(480, 360))
    out = tmp_path / "job"
    job = _cellkit("batch", tmp_path / "in", "--out", out, "--workers", "2", "--rbc-model", "none")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "results").glob("*/*.json"))) < 3:
        assert job.poll() is None, "the job ended before it could be stopped"
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)  # the job only, as `kill PID` does; its workers must go with it
    _stdout, err = job.communicate(timeout=120)
    assert job.returncode == 143 and err.strip().splitlines()[-1] == "terminated", err
    assert "resource_tracker" not in err and "Traceback" not in err
    assert not (out / "summary.csv").exists()  # never a summary that looks complete
    again = _cellkit("batch", tmp_path / "in", "--out", out, "--workers", "2", "--rbc-model", "none")
    _stdout, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert len(pd.read_csv(out / "summary.csv")) == 16


def test_ray_engine_gives_the_same_results_as_local(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra (requirements-cluster.txt)")
    _smears(tmp_path / "in", 3, size=(480, 360))
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / engine
        run = _cellkit("batch", tmp_path / "in", "--out", outs[engine], "--engine", engine, "--threads", "1")
        _stdout, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    local, ray = (pd.read_csv(outs[e] / "summary.csv") for e in ("local", "ray"))
    pd.testing.assert_frame_equal(local.drop(columns="seconds"), ray.drop(columns="seconds"))
    a, b = (pd.read_parquet(outs[e] / "cells.parquet") for e in ("local", "ray"))
    assert a[["path", "class", "label", "shown_as"]].equals(b[["path", "class", "label", "shown_as"]])
    num = [c for c in a.columns if a[c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(a[num], b[num], atol=1e-5)
    pids = {json.loads(p.read_text())["worker"]["pid"] for p in (outs["ray"] / "results").glob("*/*.json")}
    assert os.getpid() not in pids  # analysed by Ray's actors, not in the driver


def test_ray_engine_without_ray_installed_is_one_line(fakes, tmp_path, monkeypatch, capsys):
    _smears(tmp_path / "in", 1)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the optional extra were not installed
    code, _o, err = run_cli(monkeypatch, capsys, "batch", tmp_path / "in", "--out", tmp_path / "o", "--engine", "ray")
    assert code == 2 and err.count("\n") == 1 and "pip install -r requirements-cluster.txt" in err


@pytest.mark.parametrize("content", ['{"job_id": "x"}', '{"settings": [1]}', "[1]", '{"settings": {}}'])
def test_a_job_file_of_the_wrong_shape_is_refused_by_batch_and_import(fakes, tmp_path, monkeypatch, capsys, content):
    smears = _smears(tmp_path / "in", 1)
    out = tmp_path / "job"
    out.mkdir()
    (out / "job.json").write_text(content)
    with pytest.raises(CellkitError, match="not a cellkit job file"):
        run_batch(find_tasks(smears), out, SETTINGS)
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    code, _o, err = run_cli(monkeypatch, capsys, "import", out)
    assert code == 2 and "not a cellkit job file" in err and err.count("\n") == 1


def test_a_record_of_the_wrong_shape_is_done_again_and_never_imported(fakes, tmp_path):
    smears = _smears(tmp_path / "in", 2)
    tasks = find_tasks([tmp_path / "in"])
    out = tmp_path / "job"
    run_batch(tasks, out, SETTINGS)
    record_path(out, tasks[0].key).write_text("[]")
    record_path(out, tasks[1].key).write_text('{"status": "ok", "result": "x", "source": {}}')
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    _job, added, seen, unreadable, _ = import_job(out, store, "tester")
    assert (added, seen) == (0, 2)  # neither is a record: nothing half-imported
    assert sorted(unreadable) == sorted(str(record_path(out, t.key).relative_to(out)) for t in tasks)
    report = run_batch(find_tasks(smears), out, SETTINGS)
    assert report.analysed == 2  # both analysed again (the second's stamp is missing)


def test_an_unreachable_ray_cluster_is_one_error_at_once_not_minutes_of_retries():
    import socket

    from cellkit.batch.engines import _unreachable, ray_init

    pytest.importorskip("ray", reason="Ray is an optional extra (requirements-cluster.txt)")
    with socket.socket() as s:  # a port nothing listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _unreachable("auto") is None and _unreachable("local") is None
    with pytest.raises(CellkitError, match=rf"cannot reach the Ray cluster at ray://127.0.0.1:{port}: .*refused"):
        ray_init(f"ray://127.0.0.1:{port}", 1, 1)


def test_import_names_an_unreadable_record_and_exits_non_zero(fakes, tmp_path, monkeypatch, capsys):
    _smears(tmp_path / "in", 3)
    tasks = find_tasks([tmp_path / "in"])
    out = tmp_path / "job"
    run_batch(tasks, out, SETTINGS)
    broken = record_path(out, tasks[1].key)
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated result file
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    code, _o, err = run_cli(monkeypatch, capsys, "import", out)
    assert code == 1 and "2 image(s) stored now, 3 in the job" in err
    assert "1 result file(s) could not be read and were not stored" in err and broken.name in err


def _state(pid: int) -> str:
    """The process's state letter from /proc ("Z" for a zombie), or "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_worker_exits_when_its_batch_process_is_killed(tmp_path):
    """kill -9 of `cellkit batch --workers N` left its workers running (1 GB each) as orphans."""
    import signal
    import subprocess
    import sys
    import time

    child = (
        "import os, time\n"
        "from cellkit.batch.engines import watch_parent\n"
        "watch_parent(os.getppid(), poll=0.1)\n"
        "time.sleep(60)\n"
    )
    parent = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    batch = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    worker = int(batch.stdout.readline())
    time.sleep(1.0)
    assert _state(worker) not in ("", "Z")  # alive while its parent is
    batch.send_signal(signal.SIGKILL)
    batch.wait()
    deadline = time.monotonic() + 10
    while _state(worker) not in ("", "Z") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _state(worker) in ("", "Z")


def test_an_image_too_small_to_be_a_field_is_an_error_row_that_names_it(fakes, tmp_path):
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.new("RGB", (1, 1)).save(tmp_path / "in" / "dot.png")
    out = tmp_path / "job"
    run_batch(find_tasks([tmp_path / "in"]), out, SETTINGS)
    row = pd.read_csv(out / "summary.csv").iloc[0]
    assert row.status == "error" and "dot.png" in row.error and "too small" in row.error


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r.pop("path"),
        lambda r: r.update(result=None),
        lambda r: r["result"].update(counts="x"),
        lambda r: r["result"]["counts"].update(wbc="many"),
        lambda r: r.update(timings="x"),
        lambda r: r.update(rbc_forms=["a"]),
        lambda r: r["result"].update(cells="abc"),
        lambda r: r.update(status="weird"),
        lambda r: r.update(error=["a", "list"]),
        lambda r: r["result"].update(models={"detector": "yolo"}),
        lambda r: r["result"].update(image_shape=["480", "x"]),
    ],
    ids=["no path", "no result", "counts", "count", "timings", "forms", "cells", "status", "error", "models", "shape"],
)
def test_a_hand_edited_record_with_a_valid_stamp_is_done_again_not_a_crash(fakes, tmp_path, tamper):
    import json

    smears = _smears(tmp_path / "in", 2)
    tasks = find_tasks([tmp_path / "in"])
    out = tmp_path / "job"
    run_batch(tasks, out, SETTINGS)
    path = record_path(out, tasks[0].key)
    rec = json.loads(path.read_text())
    tamper(rec)
    path.write_text(json.dumps(rec))
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    _job, added, seen, unreadable, _ = import_job(out, store, "tester")
    assert (added, seen, len(unreadable)) == (1, 2, 1)  # the good one stored, the edited one named
    report = run_batch(find_tasks(smears), out, SETTINGS)
    assert report.analysed == 1 and report.skipped == 1  # the edited one analysed again, the other kept


def test_a_record_copied_under_another_name_is_imported_once(fakes, tmp_path):
    import shutil

    _smears(tmp_path / "in", 2)
    tasks = find_tasks([tmp_path / "in"])
    out = tmp_path / "job"
    run_batch(tasks, out, SETTINGS)
    copy = out / "results" / "zz" / "zzzz.json"
    copy.parent.mkdir()
    shutil.copy(record_path(out, tasks[0].key), copy)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    _job, added, _seen, unreadable, _ = import_job(out, store, "tester")
    assert added == 2 and unreadable == []  # not one of the job's images (tasks.txt): never read
    (out / "tasks.txt").unlink()  # a job folder of an older version: every record is read, the copy said
    _job, added, _seen, unreadable, _ = import_job(out, store, "tester")
    assert added == 0 and unreadable == ["results/zz/zzzz.json"]


def test_a_lock_file_that_is_a_folder_is_one_clear_error(fakes, tmp_path):
    _smears(tmp_path / "in", 1)
    out = tmp_path / "job"
    (out / ".lock").mkdir(parents=True)
    with pytest.raises(CellkitError, match=r"cannot use its lock file \.lock"):
        run_batch(find_tasks([tmp_path / "in"]), out, SETTINGS)


def test_a_summary_row_of_red_cell_forms_that_count_nothing_has_no_schistocyte_share():
    from cellkit.batch.outputs import summary_row

    rec = {"key": "k", "path": "a.png", "status": "ok", "result": {"counts": {"rbc": 0}},
           "rbc_forms": {"normal": {"count": 0, "percent": 0.0}}}  # fmt: skip
    assert summary_row(rec)["rbc_schistocyte_pct"] in (None, 0.0)


def test_an_image_analysed_again_replaces_its_row_in_the_database_and_the_old_analysis_stays(fakes, tmp_path):
    smears = _smears(tmp_path / "in", 2)
    out = tmp_path / "job"
    run_batch(find_tasks([tmp_path / "in"]), out, SETTINGS)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job, added, *_ = import_job(out, store, "tester")
    before = {i["path"]: i for i in store.batch_items(job, "tester")}
    blank = make_smear(320, 240, n_wbc=0, n_rbc=1, n_platelet=0, seed=9)[0]
    smears[0].write_bytes(encode_png(blank))  # the file changed: the next run analyses it again
    os.utime(smears[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    assert run_batch(find_tasks([tmp_path / "in"]), out, SETTINGS).analysed == 1
    _job, added, *_ = import_job(out, store, "tester")
    after = {i["path"]: i for i in store.batch_items(job, "tester")}
    assert added == 1 and len(after) == 2
    row = pd.read_csv(out / "summary.csv").set_index("path").loc[str(smears[0])]
    assert after[str(smears[0])]["wbc"] == row.wbc != before[str(smears[0])]["wbc"]  # the database follows the file
    assert after[str(smears[1])] == before[str(smears[1])]
    old = before[str(smears[0])]["analysis_id"]
    assert store.load_analysis(old, "tester") is not None  # kept, with any review made of it
    assert import_job(out, store, "tester")[1] == 0  # and nothing more on a third import


def test_a_renamed_input_folder_never_doubles_the_job_in_the_database(fakes, tmp_path, capsys, monkeypatch):
    _smears(tmp_path / "scans_2026", 2)
    out = tmp_path / "job"
    run_batch(find_tasks([tmp_path / "scans_2026"]), out, SETTINGS)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job, *_ = import_job(out, store, "tester")
    (tmp_path / "scans_2026").rename(tmp_path / "scans")  # a re-mount: the same smears under another path
    run_batch(find_tasks([tmp_path / "scans"]), out, SETTINGS)
    imported = import_job(out, store, "tester")
    assert imported.added == 2 and imported.dropped == 2 and imported.total == 2
    items = store.batch_items(job, "tester")
    assert sorted(Path(i["path"]).parent.name for i in items) == ["scans", "scans"]  # the summary's two, no more
    assert len(pd.read_csv(out / "summary.csv")) == 2


def test_a_folder_given_also_through_a_link_is_read_once(tmp_path):
    _smears(tmp_path / "in", 2)
    (tmp_path / "link").symlink_to(tmp_path / "in")
    listed = tmp_path / "list.txt"
    listed.write_text(f"{tmp_path / 'in' / 's000.png'}\n")
    os.link(tmp_path / "in" / "s001.png", tmp_path / "hard.png")  # a hard link: the same file again
    tasks = find_tasks([tmp_path / "in", tmp_path / "link", listed, tmp_path / "hard.png"])
    assert sorted(Path(t.path).name for t in tasks) == ["s000.png", "s001.png"]


def test_an_import_while_a_run_is_killed_knows_that_runs_images_and_an_empty_list_is_refused(fakes, tmp_path):
    _smears(tmp_path / "a", 2)
    out = tmp_path / "job"
    run_batch(find_tasks([tmp_path / "a"]), out, SETTINGS)
    _smears(tmp_path / "b", 2, seed=10)
    import cellkit.batch.job as job_module

    real = job_module.write_summary

    def killed(*_a, **_k):  # the run dies after its images were analysed, before the summary
        raise KeyboardInterrupt

    job_module.write_summary = killed
    try:
        with pytest.raises(KeyboardInterrupt):
            run_batch(find_tasks([tmp_path / "a", tmp_path / "b"]), out, SETTINGS)
    finally:
        job_module.write_summary = real
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    imported = import_job(out, store, "tester")
    assert imported.added == 4 and imported.total == 4 and imported.dropped == 0
    (out / "tasks.txt").write_text("\r\n")
    with pytest.raises(CellkitError, match="list of the job's images is empty"):
        import_job(out, store, "tester")


def test_a_row_imported_before_records_were_stamped_is_replaced_when_its_image_changed(fakes, tmp_path):
    from sqlalchemy import select

    from cellkit.store import Analysis

    smears = _smears(tmp_path / "in", 1)
    out = tmp_path / "job"
    run_batch(find_tasks([tmp_path / "in"]), out, SETTINGS)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job, *_ = import_job(out, store, "tester")
    with store._write_session.begin() as session:  # as an earlier version stored it: no stamp
        for a in session.scalars(select(Analysis)):
            a.meta = {k: v for k, v in a.meta.items() if k != "batch_stamp"}
    assert import_job(out, store, "tester").added == 0  # the same image: kept
    smears[0].write_bytes(encode_png(make_smear(320, 240, n_wbc=0, n_rbc=1, n_platelet=0, seed=9)[0]))
    os.utime(smears[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    run_batch(find_tasks([tmp_path / "in"]), out, SETTINGS)
    assert import_job(out, store, "tester").added == 1  # other pixels: the row follows the file
    (item,) = store.batch_items(job, "tester")
    assert item["wbc"] == int(pd.read_csv(out / "summary.csv").iloc[0].wbc)


# ---- the summary's figures are the Slide page's ------------------------------------------------------
def _field_with_nrbc_and_a_flagged_platelet():
    """Two white cells, two nucleated red cells among the white-cell boxes, a platelet the model flagged, and one
    it did not: the Slide page shows WBC 2, NRBC 2, Platelets 2 of which 1 to review."""
    from _fakes import labelled_result

    labels = ["neutrophil", "lymphocyte", "erythroblast", "erythroblast", "unknown", "platelet"]
    classes = ["wbc", "wbc", "wbc", "wbc", "platelet", "platelet"]
    return labelled_result(labels, classes, name="f.png")


def test_summary_and_import_count_white_cells_as_the_slide_page_nrbc_and_platelets_to_review_apart(fakes, tmp_path):
    _smears(tmp_path / "in", 1)
    tasks = find_tasks([tmp_path / "in"])
    out = tmp_path / "job"
    run_batch(tasks, out, SETTINGS)
    field = _field_with_nrbc_and_a_flagged_platelet()
    path = record_path(out, tasks[0].key)
    rec = json.loads(path.read_text())
    rec.update(result=field.to_dict(), rbc_forms={}, rbc_forms_withheld="")  # this field, as a worker records it
    path.write_text(json.dumps(rec))
    assert run_batch(tasks, out, SETTINGS).skipped == 1  # kept, and the summary rebuilt from it
    row = pd.read_csv(out / "summary.csv").iloc[0]
    assert field.counts["wbc"] == 4  # white-cell boxes; the Slide page's WBC leaves the two NRBC out
    assert (row.wbc, row.nrbc, row.platelet, row.platelets_to_review) == (2, 2, 2, 1)
    assert row.wbc == row.wbc_neutrophil + row.wbc_lymphocyte  # the differential is counted over the same cells
    assert row.nrbc_per_100_wbc == 100.0
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job, *_ = import_job(out, store, "tester")
    (item,) = store.batch_items(job, "tester")
    assert (item["wbc"], item["platelet"]) == (2, 2)  # the Batch page's white cells are the summary's
    assert store.list_batch_jobs("tester")[0]["wbc"] == 2


def test_red_cell_forms_off_the_models_scale_are_left_empty_and_say_why(fakes, monkeypatch, tmp_path):
    """The Red cells tab withholds the forms of a smear whose red cells are not the size the model learned; the
    summary wrote them (and a schistocyte share) anyway."""
    import cellkit.classify

    def small_cells_model(name=None):  # a red-cell model trained on cells a third of the size drawn here
        clf = tiny_classifier_for(name)
        if "rbc" in clf.spec.applies_to:
            clf.spec.card = {**clf.spec.card, "reference_cell_px": {"median": 10.0}}
        return clf

    _smears(tmp_path / "in", 2)
    tasks = find_tasks([tmp_path / "in"])
    plain = run_batch(tasks, tmp_path / "plain", SETTINGS)
    assert plain.failed == 0
    shown = pd.read_csv(tmp_path / "plain" / "summary.csv", keep_default_na=False)
    forms = [c for c in shown.columns if c.startswith("rbc_") and not c.endswith(("_withheld", "_pct"))]
    assert forms and (shown[forms].astype(int).sum(axis=1) == shown.rbc).all()  # every red cell has its form
    assert (shown.rbc_forms_withheld == "").all()
    monkeypatch.setattr(cellkit.classify, "load_classifier", small_cells_model)
    run_batch(tasks, tmp_path / "off", SETTINGS)
    off = pd.read_csv(tmp_path / "off" / "summary.csv")
    assert (off.status == "ok").all() and (off.rbc >= 5).all()  # counted, as on the page
    assert off[[c for c in off.columns if c.startswith("rbc_") and c != "rbc_forms_withheld"]].isna().all().all()
    assert off.rbc_forms_withheld.str.contains("x the size the red-cell model was trained on").all()
    rec = json.loads(record_path(tmp_path / "off", tasks[0].key).read_text())
    assert "withheld" in rec["rbc_forms_withheld"] and rec["rbc_forms"]  # the forms stay in the record, reviewable


def test_a_record_written_before_the_withheld_rule_was_recorded_follows_the_red_cell_models_card(
    fakes, monkeypatch, tmp_path
):
    import cellkit.batch.outputs as outputs
    import cellkit.models
    from cellkit.batch.outputs import summary_row
    from cellkit.models import ModelSpec

    _smears(tmp_path / "in", 1)
    tasks = find_tasks([tmp_path / "in"])
    run_batch(tasks, tmp_path / "job", SETTINGS)
    rec = json.loads(record_path(tmp_path / "job", tasks[0].key).read_text())
    rec.pop("rbc_forms_withheld")
    assert rec["result"]["models"]["classifier_rbc"]["name"] == "tiny_rbc"
    outputs._card.cache_clear()
    assert summary_row(rec)["rbc_forms_withheld"] == ""  # no such model installed here: nothing to withhold by
    card = {"reference_cell_px": {"median": 10.0}}
    spec = ModelSpec("tiny_rbc", "classifier", "cellkit_tiny_cnn", "w.safetensors", 32, ["normal"], card=card)
    monkeypatch.setattr(cellkit.models, "load_spec", lambda name: spec)
    outputs._card.cache_clear()
    row = summary_row(rec)
    outputs._card.cache_clear()
    assert "withheld" in row["rbc_forms_withheld"] and row["rbc_schistocyte_pct"] is None
    assert all(v is None for k, v in row.items() if k.startswith("rbc_") and k != "rbc_forms_withheld")


def test_cli_batch_says_how_many_failed_apart_from_those_analysed(fakes, inputs, tmp_path, monkeypatch, capsys):
    folder, _zipped, _listing = inputs  # three smears and a corrupt file
    out = tmp_path / "job"
    code, _o, err = run_cli(monkeypatch, capsys, "batch", folder, "--out", out)
    assert code == 1 and "3 analysed now" in err and ", 1 failed, 0 skipped as done before;" in err
    code, _o, err = run_cli(monkeypatch, capsys, "batch", folder, "--out", out)
    assert code == 1 and "0 analysed now, 0 failed, 4 skipped as done before (1 of them with errors kept;" in err


def test_a_zip_inside_a_zip_given_by_a_relative_path_is_named_once(fakes, tmp_path, monkeypatch, capsys):
    """The error named the zip twice: 'outer.zip/sub/inner.zip: /abs/outer.zip/sub/inner.zip: zip inside a zip...'."""
    import io
    import re

    smear = _smears(tmp_path / "in", 1)[0].read_bytes()
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("a.png", smear)
    with zipfile.ZipFile(tmp_path / "outer.zip", "w") as zf:
        zf.writestr("b.png", smear)
        zf.writestr("sub/inner.zip", inner.getvalue())
    monkeypatch.chdir(tmp_path)
    code, _o, err = run_cli(monkeypatch, capsys, "batch", "outer.zip", "--out", "job")
    assert code == 1
    (line,) = [x for x in re.split(r"[\r\n]", err) if "inner.zip" in x]
    assert line == "error: outer.zip/sub/inner.zip: zip inside a zip is not opened; unzip it first"
    row = pd.read_csv(tmp_path / "job" / "summary.csv").set_index("path").loc["outer.zip/sub/inner.zip"]
    assert row.error == "outer.zip/sub/inner.zip: zip inside a zip is not opened; unzip it first"
