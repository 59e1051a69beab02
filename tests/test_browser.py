"""The notebooks in JupyterLab, in a real browser: headless Chromium driven by Playwright.

Notebook 00 runs all its cells with no error, and notebook 10's ipywidgets explorer renders and redraws
when a control changes. Screenshots go to test-artifacts/browser/ (FER_KIT_ARTIFACTS to choose). Skipped,
saying why, where Chromium or Playwright is missing: CI installs both (.ci/run), browser downloads are not
possible here, so Playwright drives Debian's /usr/bin/chromium through executable_path.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from fer_kit.paths import project_dir

CHROMIUM = os.environ.get("FER_KIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright
except ImportError:                                    # pragma: no cover (CI installs it)
    sync_playwright = None

pytestmark = [pytest.mark.notebooks,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium (CI does)"),
              pytest.mark.skipif(sync_playwright is None, reason="no Playwright: pip install playwright (CI does)")]

ARTIFACTS = Path(os.environ.get("FER_KIT_ARTIFACTS", project_dir() / "test-artifacts")) / "browser"
TOKEN = "fer-kit-browser-test"
# small runs: the tests' cached synthetic faces (n_frames 600, seed 3), a minute of training in all
PARAMETERS = {
    "00_quickstart": dict(n_frames=600, seed=3, epochs=1, image_size=48, out_dir="runs/browser_00",
                          figures_dir="figures_browser"),
    "10_gradcam_attention": dict(n_frames=600, seed=3, models="dan", methods="gradcam", n_faces=16, epochs=1,
                                 max_batches=4, run_dir="runs/no_run", out_dir="runs/browser_10",
                                 figures_dir="figures_browser", interactive=True),
}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]   # no calls out of a closed network


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_synthetic):
    """JupyterLab on localhost serving parameterised copies of notebooks 00 and 10."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    root = tmp_path_factory.mktemp("lab")
    for name, params in PARAMETERS.items():
        nb = parameterize_notebook(load_notebook_node(str(project_dir() / "notebooks" / f"{name}.ipynb")), params)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(nb, root / f"{name}.ipynb")
    settings = root / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell kept in the page, so the test can read prompts and outputs of cells scrolled out of view
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    news = root / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port = _free_port()
    env = {**os.environ, "FER_KIT_OUTPUT": str(root), "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
           "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    env.pop("MPLBACKEND", None)                       # figures inline, as a student sees them
    log = open(root / "lab.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                               f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}", *(["--allow-root"] if os.geteuid() == 0 else []),
                               "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"JupyterLab stopped: {(root / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _run_all(page, url: str, name: str, timeout_s: float = 600):
    """Open a notebook, run every cell from the Run menu, and wait until the last one has run."""
    page.goto(f"{url}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={TOKEN}")   # its own workspace
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    accept = page.locator(".jp-Dialog .jp-mod-accept")      # "Select Kernel": the notebook's own, python3
    try:
        accept.wait_for(timeout=15_000)
        accept.click()
    except PlaywrightTimeout:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        # collapsed (solution) cells show no prompt: the kernel going idle says the queue, theirs too, has run
        prompts = [p for p in page.locator(".jp-CodeCell .jp-InputPrompt:visible").all_inner_texts() if p.strip()]
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count()
        if prompts and all(p.strip().strip("[]:").isdigit() for p in prompts) and idle:
            return prompts
        if page.locator("text=Traceback (most recent call last)").count():
            break                                       # Run All stops at an error: the cells below never run
        if time.monotonic() - start > 60 and all(p.strip() == "[ ]:" for p in prompts):
            break                                       # nothing started
        time.sleep(2)
    page.screenshot(path=str(ARTIFACTS / f"{name}_failed.png"), full_page=True)
    raise AssertionError(f"{name}: not every cell ran; prompts {prompts}")


def _errors(page) -> list[str]:
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    return [o[:500] for o in outputs if "Traceback (most recent call last)" in o or o.lstrip().startswith("Error")]


def test_notebook_00_runs_every_cell_in_jupyterlab(lab, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _run_all(page, lab, "00_quickstart")
    assert not _errors(page)
    text = " ".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    assert "most frequent class scores" in text and page.locator(".jp-OutputArea-output img").count() >= 2
    assert "On accuracy:" in text                       # the last (collapsed) solution cell ran too
    page.screenshot(path=str(ARTIFACTS / "00_quickstart_executed.png"))
    page.locator(".jp-OutputArea-output img").last.screenshot(path=str(ARTIFACTS / "00_quickstart_predictions.png"))
    page.close()


def test_notebook_10_explorer_redraws_when_a_control_changes(lab, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _run_all(page, lab, "10_gradcam_attention")
    assert not _errors(page)
    explorer = page.locator(".widget-vbox").first
    explorer.wait_for(timeout=60_000)
    image = explorer.locator(".widget-output img").first
    image.wait_for(timeout=60_000)
    explorer.scroll_into_view_if_needed()
    explorer.screenshot(path=str(ARTIFACTS / "10_explorer_before.png"))
    before = image.get_attribute("src")
    target = explorer.locator(".widget-dropdown:has(label:text-is('target')) select")
    options = target.locator("option").all_inner_texts()
    target.select_option(label=options[2])            # another class than the true one
    page.wait_for_function("([el, old]) => el.querySelector('.widget-output img') && "
                           "el.querySelector('.widget-output img').src !== old",
                           arg=[explorer.element_handle(), before], timeout=60_000)
    explorer.screenshot(path=str(ARTIFACTS / "10_explorer_after.png"))
    layer = explorer.locator(".widget-dropdown:has(label:text-is('layer')) select")
    assert layer.evaluate("s => s.options[s.selectedIndex] && s.options[s.selectedIndex].text") == "trunk"
    assert explorer.locator(".widget-output img").first.get_attribute("src") != before
    page.close()
