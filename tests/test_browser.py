"""A student's and an instructor's view, in a real browser: notebook 4 in JupyterLab, its
lambda/gamma explorer and its RISE slideshow.

JupyterLab is started headless on 127.0.0.1 (a random token, a throwaway copy of the notebook with
its outputs and saved widget state removed, so any slider on the page comes from this run's
kernel and the committed notebook is never written). Headless Chromium (Debian's `chromium`
and `chromium-driver`, driven by Selenium) opens it, runs all cells from the Run menu, finds
the first ipywidgets slider, moves it with the keyboard and waits for the figure under it to
be repainted; then it starts the slideshow from RISE's toolbar button and checks that a slide's
equations are typeset. Screenshots land in $RLHF_BROWSER_SCREENSHOTS (default artifacts/browser/).

Skipped only where Chromium or its driver is not installed (`apt-get install chromium
chromium-driver`); under CI (CI set), which installs both in .ci/run, that is a failure.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_gae.ipynb"
SCREENSHOTS = Path(os.environ.get("RLHF_BROWSER_SCREENSHOTS", ROOT / "artifacts" / "browser"))
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
TIMEOUT = 120  # seconds for any one wait (kernel start and all cells on a busy 2-core machine)

if not (CHROMIUM and CHROMEDRIVER):
    missing = " and ".join(name for name, path in [("chromium", CHROMIUM),
                                                   ("chromedriver", CHROMEDRIVER)]
                           if not path)
    reason = f"{missing} not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        raise RuntimeError(f"browser test: {reason}; .ci/run should have installed it")
    pytest.skip(reason, allow_module_level=True)

from selenium import webdriver  # noqa: E402  (only where a browser exists)
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_outputs(notebook: dict) -> dict:
    """The notebook as a student first opens it: no outputs, counts or saved widget state."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    notebook["metadata"].pop("widgets", None)
    return notebook


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory):
    """URL (with its token) of NOTEBOOK's throwaway copy in a JupyterLab on loopback."""
    tmp = tmp_path_factory.mktemp("lab")
    root, config = tmp / "notebooks", tmp / "config"
    root.mkdir(), config.mkdir()
    notebook = without_outputs(json.loads(NOTEBOOK.read_text()))
    (root / NOTEBOOK.name).write_text(json.dumps(notebook))
    shutil.copy(NOTEBOOK.parent / "rise.css", root)  # the slideshow's style, read beside it
    # no news or update toasts over the page, no state from a user's ~/.jupyter
    settings = tmp / "settings"
    notification = (settings / "@jupyterlab" / "apputils-extension"
                    / "notification.jupyterlab-settings")
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    (config / "jupyter_lab_config.json").write_text(json.dumps({"LabApp": {
        "news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
        "workspaces_dir": str(tmp / "workspaces"), "user_settings_dir": str(settings)}}))
    port = free_port()
    # a token even on loopback: without one any local user could run code as us in the kernel;
    # passed in the environment, which other users cannot read (a command line they can)
    token = secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "IPYTHONDIR": str(tmp / "ipython"), "JUPYTER_TOKEN": token}
    with open(tmp / "server.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             "--ServerApp.password=", f"--ServerApp.root_dir={root}"],
            env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(base, token, server, tmp / "server.log")
        # the token in the URL logs the browser in (a cookie then serves the page's requests)
        yield (f"{base}/lab/tree/{NOTEBOOK.name}?token={token}",
               sum(c["cell_type"] == "code" for c in notebook["cells"]))
    finally:
        # SIGTERM: the server shuts its kernel down; SIGKILL its whole group only if it hangs
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def wait_for_server(base: str, token: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    # /api/status needs the token too; in a header, so that it never lands in a log line
    status = urllib.request.Request(f"{base}/api/status",
                                    headers={"Authorization": f"token {token}"})
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {server.returncode}:\n"
                               f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(status, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab not up after {TIMEOUT} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1100",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()


def wait_for(driver, condition, what: str):
    """WebDriverWait(condition) with a message saying what never happened; elements that JupyterLab
    replaces while we look (outputs re-rendered) are looked up again at the next poll."""
    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.25,
                         ignored_exceptions=[NoSuchElementException, StaleElementReferenceException]
                         ).until(condition, message=f"waited {TIMEOUT} s for {what}")


def run_all_cells(driver) -> None:
    """Run > Run All Cells, as a student would."""
    menu = wait_for(driver,
                    lambda d: next((m for m in d.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                                    if m.text.strip() == "Run"), None),
                    "the Run menu")
    menu.click()
    wait_for(driver,
             lambda d: next((item for item in d.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
                             if item.text.startswith("Run All Cells")), None),
             "Run All Cells in the Run menu").click()


def execution_counts(driver) -> list[str]:
    """The `[n]:` prompt of every code cell on the page, in order (read at once: cells
    re-render)."""
    return driver.execute_script("return [...document.querySelectorAll("
                                 "'.jp-CodeCell > .jp-Cell-inputWrapper .jp-InputPrompt')]"
                                 ".map(prompt => prompt.textContent.trim())")


def kernel_idle(driver) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR,
                                     '.jp-Notebook-ExecutionIndicator[data-status="idle"]'))


def test_explorer_slider_redraws_the_figure_in_jupyterlab(lab_url, browser):
    url, n_code = lab_url
    started = time.monotonic()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(url)
    wait_for(browser, lambda d: len(execution_counts(d)) == n_code and kernel_idle(d),
             f"the notebook's {n_code} code cells and an idle kernel")
    assert all(count in ("[ ]:", "") for count in execution_counts(browser)), \
        f"the copy should open unexecuted: {execution_counts(browser)}"

    run_all_cells(browser)
    # Run All stops at an error: every prompt numbered means every cell ran without one
    wait_for(browser,
             lambda d: all(c[1:-2].isdigit() for c in execution_counts(d)) and kernel_idle(d),
             f"all {n_code} code cells to run")

    # the first slider rendered by the live kernel (lambda), and the figure in the same output
    slider = wait_for(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, ".jp-OutputArea-output .jupyter-widgets.widget-slider"), "a slider widget")
    output = slider.find_element(By.XPATH,
                                 "./ancestor::div[contains(@class, 'jp-OutputArea-output')]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", slider)
    wait_for(browser, lambda d: figure_png(d, output), "the explorer's figure")
    time.sleep(0.5)  # let the scroll settle before the reference picture
    initial = figure_png(browser, output)
    (SCREENSHOTS / "04_gae_figure_before.png").write_bytes(initial)
    readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
    start_value = readout.text

    # Home: one jump to lambda = 0 (one change event, so the first new picture is the final one)
    move(browser, slider, [Keys.HOME], "0.00")
    wait_for(browser,
             lambda d: kernel_idle(d) and (png := figure_png(d, output)) != initial and png,
             f"the figure to change after lambda went {start_value} -> 0.00")
    (SCREENSHOTS / "04_gae_figure_after.png").write_bytes(figure_png(browser, output))
    browser.save_screenshot(str(SCREENSHOTS / "04_gae_explorer.png"))

    # and back (End, then one step left): the figure follows the slider, so it is the first again
    move(browser, slider, [Keys.END, Keys.ARROW_LEFT], start_value)
    wait_for(browser, lambda d: figure_png(d, output) == initial,
             f"the figure at lambda {start_value} to be the initial one again")
    print(f"browser test: {n_code} cells ran, lambda {start_value} -> 0.00 -> {start_value} redrew "
          f"the figure; {time.monotonic() - started:.0f} s in the browser; "
          f"screenshots in {SCREENSHOTS}")


def figure_png(driver, output) -> bytes | None:
    """The picture of the first loaded <img> in `output` (None while it is being replaced)."""
    img = next(iter(output.find_elements(By.TAG_NAME, "img")), None)
    loaded = img is not None and driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", img)
    return img.screenshot_as_png if loaded else None


def move(driver, slider, keys: list[str], expected: str) -> None:
    """Focus the slider's handle, press `keys` and wait for its readout to show `expected`."""
    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    for key in keys:
        handle.send_keys(key)
    readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
    wait_for(driver, lambda d: readout.text == expected, f"the slider's readout to show {expected}")



def test_rise_slideshow_typesets_the_maths_of_a_slide(lab_url, browser):
    """An instructor's view: RISE's toolbar button renders the notebook as reveal.js slides (one
    per "slide" cell of rlhf_lite.slides) in a panel beside it; opened in the whole window, as
    RISE's "Open as Reveal Slideshow" does, the second slide's equations are typeset by MathJax."""
    url, n_code = lab_url
    notebook = json.loads(NOTEBOOK.read_text())
    n_slides = sum(c["metadata"]["slideshow"]["slide_type"] == "slide" for c in notebook["cells"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(url)
    wait_for(browser, lambda d: len(execution_counts(d)) == n_code, "the notebook's code cells")
    wait_for(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, '.jp-NotebookPanel-toolbar [data-command="RISE:preview"]'),
        "RISE's toolbar button").click()
    frame = wait_for(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, f'iframe[src*="/rise/{NOTEBOOK.name}"]'), "the slideshow's panel")
    browser.get(frame.get_attribute("src"))  # the same slideshow, the whole window to itself
    slides = wait_for(browser, lambda d: d.find_elements(
        By.CSS_SELECTOR, ".reveal.ready .slides > section"), "reveal.js slides")
    assert len(slides) == n_slides
    assert not browser.find_element(By.CSS_SELECTOR, ".jp-Notebook-footer").is_displayed(), \
        "notebooks/rise.css should hide JupyterLab's 'Click to add a cell' bar"
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)  # the next slide
    present = wait_for(browser, lambda d: next(
        (s for s in d.find_elements(By.CSS_SELECTOR, ".reveal .slides > section.present")
         if "Rewards per token" in s.text), None), "the second slide")
    wait_for(browser, lambda d: present.find_elements(
        By.CSS_SELECTOR, 'mjx-container[display="true"]'), "typeset display maths")
    time.sleep(1)  # reveal.js's slide transition
    browser.save_screenshot(str(SCREENSHOTS / "04_gae_slide.png"))
