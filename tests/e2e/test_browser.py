"""Real-browser tests: `streamlit run app.py` in a subprocess, driven by Debian's headless chromium.

Nothing is downloaded: Playwright only drives the system browser at /usr/bin/chromium (installed by
.ci/run). The app reads a small synthetic dataset written by the test, never ../shared.
Screenshots are saved in the test's tmp_path and their paths printed (see them with `pytest -s`).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cellkit.config import weights_dir
from cellkit.detect import load_detector
from cellkit.models import list_specs
from cellkit.synth import make_crop, make_demo_smear

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CLASSES = {"neutrophil": ("SNE", 0), "lymphocyte": ("LY", 1), "eosinophil": ("EO", 2), "monocyte": ("MO", 3)}
TIMEOUT_MS = 90_000  # the 2-core CI machine is shared; first page loads import torch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _save(img: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small classification folder: <class>/<PREFIX>_<i>.png, 6 synthetic crops per class."""
    root = tmp_path_factory.mktemp("cells")
    for cls, (prefix, kind) in CLASSES.items():
        for i in range(6):
            _save(make_crop(kind, size=96, seed=10 * kind + i), root / cls / f"{prefix}_{i}.png")
    return root


@contextmanager
def _serve(home: Path, data: Path) -> Iterator[str]:
    """A real `streamlit run app.py` on a free port; yields its URL once /_stcore/health answers ok."""
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {
        **os.environ,
        "CELLKIT_HOME": str(home),
        "CELLKIT_CACHE_DIR": str(home / "cache"),
        "CELLKIT_DATA_DIR": str(data),
        "YOLO_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
    cmd += ["--server.port", str(port), "--browser.gatherUsageStats", "false"]
    log_path = home / "streamlit.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()}")
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                        if resp.read().strip() == b"ok":
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("streamlit did not answer /_stcore/health within 60 s")
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def app_url(dataset, tmp_path_factory) -> Iterator[str]:
    """The dashboard, shared by the module's tests."""
    with _serve(tmp_path_factory.mktemp("app-home"), dataset) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM}; `.ci/run` installs it (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 960})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    yield pg
    context.close()


def _screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def _wait_idle(page) -> None:
    """Wait until the script run has finished: Streamlit's status widget stays absent for ~1 s."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    quiet = 0
    while quiet < 4:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        quiet = 0 if running else quiet + 1
        if time.monotonic() > deadline:
            pytest.fail("the app was still running after the timeout")
        page.wait_for_timeout(250)


def test_dockerfile_healthcheck_probe_accepts_running_app(app_url):
    """The Dockerfile's HEALTHCHECK command, pointed at this server's port, exits 0."""
    line = next(ln for ln in (ROOT / "Dockerfile").read_text().splitlines() if "_stcore/health" in ln)
    probe = json.loads(line.strip().removeprefix("CMD "))
    port = app_url.rsplit(":", 1)[1]
    code = probe[2].replace("127.0.0.1:8501", f"127.0.0.1:{port}")
    assert code != probe[2]
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


@pytest.mark.parametrize("url_path", ["slide", "classify", "explain", "models"])  # home, dataset: tests below
def test_every_page_opens_without_traceback(app_url, page, url_path):
    page.goto(f"{app_url}/{url_path}")
    page.locator('[data-testid="stMain"] h1').first.wait_for()
    _wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_home_then_dataset_page_shows_charts(app_url, page, dataset, tmp_path):
    page.goto(app_url)
    page.get_by_role("heading", name="cellkit").wait_for()
    page.get_by_text("never leave this machine").wait_for()
    _wait_idle(page)
    _screenshot(page, tmp_path / "home.png")

    page.locator('[data-testid="stSidebarNav"] a', has_text="Dataset").click()
    page.wait_for_url(f"{app_url}/dataset")
    _wait_idle(page)
    path_box = page.locator('[data-testid="stTextInput"] input').first
    if path_box.input_value() != str(dataset):
        path_box.fill(str(dataset))
        path_box.press("Enter")
        _wait_idle(page)
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.first.wait_for()
    _wait_idle(page)
    page.locator(".js-plotly-plot").first.wait_for()
    assert charts.count() >= 2
    images = page.locator('[data-testid="stMetric"]').filter(has_text="Images").first
    assert images.locator('[data-testid="stMetricValue"]').inner_text().strip() == str(6 * len(CLASSES))
    assert page.locator('[data-testid="stException"]').count() == 0
    _screenshot(page, tmp_path / "dataset.png")


def test_slide_upload_shows_counts(app_url, page, tmp_path):
    if not list_specs(task="detector"):
        pytest.skip(f"no detector card in {weights_dir()}; train one with `cellkit train detector`")
    smear, _boxes, _classes = make_demo_smear(640, 480, n_wbc=3, n_rbc=30, n_platelet=5, seed=3)
    png = _save(smear, tmp_path / "smear.png")
    page.goto(app_url)
    page.locator('[data-testid="stSidebarNav"] a', has_text="Slide analysis").click()
    page.get_by_role("heading", name="Slide analysis").wait_for()
    _wait_idle(page)
    page.locator("input[type=file]").first.set_input_files(str(png))
    wbc = page.locator('[data-testid="stMetric"]').filter(has_text="WBC").first
    wbc.wait_for()
    _wait_idle(page)
    # the page shows what the bundled models find on this drawn smear (the detector's accuracy on drawn smears is
    # tests/test_detect.py's; on real smears, the model card's): the white-cell boxes, less those the classifier
    # calls NRBC (not white cells, as in the differential): the count is wired through, not invented
    from cellkit.classify import load_classifier
    from cellkit.slide import analyze

    result = analyze(smear, load_detector(), load_classifier())
    expected = sum(v["count"] for v in result.differential().values())
    assert result.counts["wbc"] >= 2 and expected == result.counts["wbc"] - result.nrbc().get("count", 0)
    assert wbc.locator('[data-testid="stMetricValue"]').inner_text().strip() == str(expected)
    page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first.wait_for()  # the image with its boxes
    page.wait_for_timeout(500)  # let plotly paint before the screenshot
    _screenshot(page, tmp_path / "slide.png")
    assert page.locator('[data-testid="stException"]').count() == 0


def test_deep_link_on_fresh_server_goes_through_app_shell(browser, dataset, tmp_path):
    """A bookmarked page opened first on a fresh server still runs through app.py's navigation.

    Pages live in app_pages/, not pages/: a pages/ folder beside the entry makes Streamlit 1.67 serve such a
    first request in its legacy multipage mode (the page alone, no st.navigation, no wide layout).
    """
    with _serve(tmp_path / "home", dataset) as url:
        context = browser.new_context(viewport={"width": 1440, "height": 960})
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{url}/dataset")
            page.get_by_role("heading", name="Dataset").wait_for()
            nav = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
            assert any("Slide analysis" in t for t in nav), f"sidebar shows {nav}: the page ran without app.py"
        finally:
            context.close()


def test_classify_frames_any_crop_and_shows_the_review_verdict(app_url, page, tmp_path):
    """A tight crop and a loose one: both classified, each shown as uploaded and as the model sees it."""
    if not list_specs(task="classifier"):
        pytest.skip(f"no classifier card in {weights_dir()}")
    cell = make_crop(0, size=160, seed=5)
    tight = _save(cell[40:120, 40:120], tmp_path / "tight.png")
    loose = np.empty((480, 480, 3), np.uint8)
    loose[:] = cell[2, 2]
    loose[160:320, 160:320] = cell
    loose_png = _save(loose, tmp_path / "loose.png")
    noise = _save(np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8), tmp_path / "noise.png")
    page.goto(f"{app_url}/classify")
    page.get_by_role("heading", name="Classify cell crops").wait_for()
    _wait_idle(page)
    page.locator("input[type=file]").first.set_input_files([str(tight), str(loose_png), str(noise)])
    page.get_by_text("Model's view").first.wait_for()
    _wait_idle(page)
    classified = page.locator('[data-testid="stMetric"]').filter(has_text="Crops classified").first
    assert classified.locator('[data-testid="stMetricValue"]').inner_text().strip() == "3"
    flagged = page.locator('[data-testid="stMetric"]').filter(has_text="Unidentified — review").first
    assert int(flagged.locator('[data-testid="stMetricValue"]').inner_text().strip()) >= 1  # the noise crop
    page.get_by_text("Unidentified — review").nth(1).wait_for()
    page.wait_for_timeout(500)
    _screenshot(page, tmp_path / "classify.png")
    assert page.locator('[data-testid="stException"]').count() == 0


def test_review_flow_of_a_case_from_upload_to_signed_pdf(app_url, page, tmp_path):
    """A hematologist's case: 3 fields uploaded at once, a key reclassifies, a key rejects, a click adds a missed
    cell, sign-off, a reload finds the case signed, and the PDF downloads with the reviewer in it."""
    if not list_specs(task="detector"):
        pytest.skip(f"no detector card in {weights_dir()}; train one with `cellkit train detector`")
    paths = []
    for k in range(3):
        smear, *_ = make_demo_smear(640, 480, n_wbc=3, n_rbc=25, n_platelet=3, seed=40 + k)
        paths.append(str(_save(smear, tmp_path / f"field_{k + 1}.png")))
    page.goto(f"{app_url}/slide")
    page.get_by_role("heading", name="Slide analysis").wait_for()
    _wait_idle(page)
    page.get_by_role("button", name="New case").click()  # the module's other tests may have started one
    page.get_by_label("Case name (specimen or accession number)").fill("E2E-0042")
    page.get_by_role("button", name="Start case").click()
    page.get_by_text("0 of 100 white cells counted").first.wait_for()
    _wait_idle(page)
    page.locator("input[type=file]").first.set_input_files(paths)
    page.get_by_text("over 3 fields").wait_for()
    _wait_idle(page)
    gallery = page.locator('[data-testid="stMain"]')
    timings = {}

    def key(name: str, expect: str) -> None:
        page.get_by_role("heading", name="Slide analysis").click()  # focus on the page, not on a text box
        started = time.monotonic()
        page.keyboard.press(name)
        gallery.get_by_text(expect).first.wait_for()  # the page shows the step's result
        timings[name] = time.monotonic() - started
        _wait_idle(page)

    key("7", "Basophil (1)")  # the selected cell becomes a basophil, the next one is selected
    key("X", "Rejected: not a cell (1)")
    _screenshot(page, tmp_path / "review_keys.png")

    wbc = page.locator('[data-testid="stMetric"]').filter(has_text="WBC").first.locator('[data-testid="stMetricValue"]')
    before = int(wbc.inner_text())
    page.get_by_text("Add a missed cell").click()
    adder = page.locator('[data-testid="stExpander"]').filter(has_text="Add a missed cell")
    started = time.monotonic()
    adder.locator("iframe").content_frame.locator("img").click(position={"x": 40, "y": 40})
    page.get_by_text("added by the reviewer").wait_for()
    timings["add"] = time.monotonic() - started
    _wait_idle(page)
    assert int(wbc.inner_text()) == before + 1
    _screenshot(page, tmp_path / "review_added.png")

    page.get_by_role("tab", name="Case & report").click()
    # the sidebar's reviewer (single-user mode): the sign-off form starts with that name
    page.locator('[data-testid="stSidebar"]').get_by_label("Reviewer", exact=True).fill("Dr Ada Lovelace")
    page.keyboard.press("Enter")
    _wait_idle(page)
    form = page.locator('[data-testid="stForm"]').filter(has_text="Sign off")
    expect_value = form.get_by_label("Reviewer", exact=True)
    expect_value.wait_for()
    assert expect_value.input_value() == "Dr Ada Lovelace"
    page.get_by_text("Before signing:").wait_for()  # one small field is far from the target count
    page.get_by_text("I have checked these and sign anyway").click()
    page.get_by_role("button", name="Sign off").click()
    page.get_by_text("Signed off by").first.wait_for()
    _wait_idle(page)
    _screenshot(page, tmp_path / "signed.png")

    page.reload()  # the next day, as it were: the case is the user's, not the browser session's
    page.get_by_role("heading", name="Slide analysis").wait_for()
    _wait_idle(page)
    page.get_by_role("tab", name="Case & report").click()
    page.get_by_text("Version 1 signed by Dr Ada Lovelace").wait_for()
    with page.expect_download() as download:
        page.get_by_role("button", name="Case report (PDF)").click()
    pdf = Path(download.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF")
    from pypdf import PdfReader

    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    assert "Reviewed and signed by Dr Ada Lovelace" in text and "field_3.png" in text
    assert page.locator('[data-testid="stException"]').count() == 0
    print("seconds per review action in the browser (key press to page updated):",
          {k: round(v, 2) for k, v in timings.items()})  # fmt: skip
