"""`make test-browser`: notebooks 03, 04b and 05 in a real browser, the way a learner meets them.

Starts JupyterLab headless on a free port with a random token, serving a temporary copy of the notebooks
(so nothing is saved into the repository), in fast mode (LLMLAB_FAST=1, files under a temporary
LLMLAB_FAST_ROOT), and drives Chromium with Playwright:

- 03: run all cells, move the explorer's ``depth`` slider, see the panel's numbers change;
- 04b: run all cells, move the experiment panel's ``embedding_size`` slider, set ``steps``, click **Train**,
  see the live plot image replaced several times and the runs table grow by one row;
- 05: run all cells, set the sampling panel's ``temperature``, see new samples that start with the prompt.

It looks only for what stays stable while the notebooks are rewritten: the widgets' description labels, the
"Train" button, the runs table; a missing one fails with a message naming it. Screenshots go to
out/browser/ (git-ignored). Chromium: LLMLAB_CHROMIUM, else chromium / chromium-browser / google-chrome on
PATH, else Playwright's own (``playwright install chromium``). Not collected by pytest (no ``test_`` prefix):
``make test-browser`` runs it. Exit status 0: every check passed; 1: a check failed; 2: a tool is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = {"03": "03_gpt_block", "04b": "04b_optimisation", "05": "05_sampling"}
SHOTS = ROOT / "out" / "browser"
RUN_ALL_TIMEOUT_S = 600.0


class CheckFailed(AssertionError):
    """A check in the browser failed; the message says what was looked for and not found."""


# ---- the tools ---------------------------------------------------------------------------------------


def find_chromium() -> str | None:
    """The Chromium/Chrome executable to drive (None: fall back to Playwright's own browser)."""
    if os.environ.get("LLMLAB_CHROMIUM"):
        return os.environ["LLMLAB_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    mac = Path("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")
    return str(mac) if mac.exists() else None


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


def lab_environment(tmp: Path) -> dict[str, str]:
    """JupyterLab with its own settings: every cell rendered (no windowing), no autosave, no news prompt."""
    settings = tmp / "lab-settings"
    # Windowing renders only the cells in view; the checks read cells anywhere in the notebook.
    _write_json(settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings", {"windowingMode": "none"})
    # No autosave (a temporary copy anyway); start the notebook's own kernel without asking.
    _write_json(
        settings / "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings",
        {"autosave": False, "autoStartDefaultKernel": True},
    )
    _write_json(
        settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings",
        {"fetchNews": "false", "checkForUpdates": False},
    )
    env = dict(os.environ)
    env.update(
        LLMLAB_FAST="1",
        LLMLAB_FAST_ROOT=str(tmp / "fast"),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_lab(tmp: Path, port: int, token: str) -> subprocess.Popen[bytes]:
    """JupyterLab on a copy of the notebooks, headless; its log goes to tmp/lab.log."""
    work = tmp / "notebooks"
    work.mkdir()
    for name in NOTEBOOKS.values():
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", work)
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={work}",
        "--ServerApp.port_retries=0",
    ]
    if hasattr(os, "getuid") and os.getuid() == 0:
        command.append("--allow-root")
    log = open(tmp / "lab.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=lab_environment(tmp), cwd=work)


def wait_for_lab(port: int, token: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Until JupyterLab answers on its port (or fail with its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CheckFailed(f"JupyterLab exited ({process.returncode}) before answering:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise CheckFailed(f"JupyterLab did not answer on port {port} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


# ---- the page --------------------------------------------------------------------------------------------

PROMPTS_JS = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')]
  .map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || '')
  .map(t => t.trim())"""

ERROR_JS = """() => {
  const outs = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output')];
  const bad = outs.find(o => /Traceback|\\b\\w+Error\\b:/.test(o.textContent));
  return bad ? bad.textContent.slice(-1500) : '';
}"""


def open_notebook(page: Any, base: str, token: str, name: str) -> None:
    """Open ``name`` in a fresh workspace and wait for its kernel to be idle (answering a kernel dialog)."""
    page.goto(f"{base}/lab/workspaces/check-{name}/tree/{name}.ipynb?reset&token={token}")
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first.wait_for(state="visible", timeout=120_000)
    status = page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle$"))
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if select.count():
            select.first.click()
        if status.count():
            return
        time.sleep(0.5)
    raise CheckFailed(f"{name}: the kernel did not become idle within 180 s (status bar never said '| Idle')")


def run_all(page: Any, name: str, timeout: float = RUN_ALL_TIMEOUT_S) -> float:
    """Run → Run All Cells, and wait until every code cell has run; the seconds it took."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    started = time.monotonic()
    time.sleep(1.0)
    while time.monotonic() - started < timeout:
        prompts = page.evaluate(PROMPTS_JS)
        if prompts and not any("*" in p for p in prompts):
            if all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
                return time.monotonic() - started
            error = page.evaluate(ERROR_JS)
            stopped = next(i for i, p in enumerate(prompts) if not re.fullmatch(r"\[\d+\]:", p))
            raise CheckFailed(
                f"{name}: Run All stopped before code cell {stopped} of {len(prompts)} (an error?); prompts "
                f"{prompts[:12]}:\n{error}"
            )
        time.sleep(0.5)
    raise CheckFailed(f"{name}: Run All did not finish within {timeout:.0f} s")


def slider(page: Any, label: str, name: str, within: Any = None) -> Any:
    """The first ipywidgets slider whose description is ``label`` in the open notebook (or inside ``within``)."""
    found = (within or page).locator(
        ".widget-slider" if within is not None else ".jp-NotebookPanel:not(.lm-mod-hidden) .widget-slider",
        has=page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")),
    )
    if found.count() == 0:
        raise CheckFailed(f"{name}: no slider labelled {label!r} on the page (is its panel displayed by a cell?)")
    return found.first


def panel_of(widget: Any) -> Any:
    """The outermost ipywidgets box around ``widget``: the panel it belongs to."""
    return widget.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][last()]")


def readout(widget: Any) -> str:
    return widget.locator(".widget-readout").first.inner_text().strip()


def press_on_slider(page: Any, widget: Any, key: str) -> None:
    """Move a slider as a learner does with the keyboard: focus its handle, press ``key``."""
    widget.scroll_into_view_if_needed()
    widget.locator(".noUi-handle").first.focus()
    page.keyboard.press(key)


def type_into_readout(page: Any, widget: Any, value: str) -> None:
    """Type a value into the slider's editable readout and press Enter (the slider follows)."""
    box = widget.locator(".widget-readout").first
    box.scroll_into_view_if_needed()
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def wait_until(condition: Any, what: str, timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise CheckFailed(f"{what} (waited {timeout:.0f} s)")


# ---- the three notebooks -------------------------------------------------------------------------------


def shown(panel: Any) -> list[str]:
    """What a panel shows besides its controls: the text of its HTML widgets and its images' sources."""
    texts = panel.locator(".widget-html-content").all_inner_texts()
    return texts + [img.get_attribute("src") or "" for img in panel.locator("img").all()]


def settle(panel: Any, timeout: float = 30) -> None:
    """Until the panel shows the same thing twice, a second apart (a redraw may follow the text)."""
    last, deadline = shown(panel), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = shown(panel)
        if now == last:
            return
        last = now


def check_03(page: Any, name: str) -> str:
    depth = slider(page, "depth", name)
    panel = panel_of(depth)
    before_value, before = readout(depth), shown(panel)
    press_on_slider(page, depth, "ArrowRight")
    wait_until(lambda: readout(depth) != before_value, f"{name}: the 'depth' slider did not move", 20)
    wait_until(
        lambda: shown(panel) != before,
        f"{name}: moving 'depth' {before_value} -> {readout(depth)} changed nothing its panel shows",
        60,
    )
    settle(panel)
    panel.screenshot(path=str(SHOTS / f"{name}-explorer.png"))
    return f"depth {before_value} -> {readout(depth)}: the panel's numbers and chart changed"


def check_04b(page: Any, name: str, steps: int) -> str:
    embedding = slider(page, "embedding_size", name)
    panel = panel_of(embedding)
    # By its text: the accessible name also holds the icon's glyph.
    train = panel.locator("button", has_text=re.compile(r"^\s*Train\s*$"))
    if train.count() == 0:
        raise CheckFailed(f"{name}: no 'Train' button in the panel with the 'embedding_size' slider")
    before = readout(embedding)
    press_on_slider(page, embedding, "ArrowLeft")  # a smaller model: a quicker run
    wait_until(lambda: readout(embedding) != before, f"{name}: the 'embedding_size' slider did not move", 20)
    type_into_readout(page, slider(page, "steps", name, panel), str(steps))
    wait_until(
        lambda: readout(slider(page, "steps", name, panel)) == str(steps), f"{name}: 'steps' did not take {steps}", 20
    )
    table = panel.locator("table")
    if table.count() == 0:
        raise CheckFailed(f"{name}: no runs table (an HTML <table>) in the experiment panel")
    rows_before = table.last.locator("tr").count()
    images: list[str] = []

    def live_src() -> str:
        found = panel.locator("img")
        return found.first.get_attribute("src") or "" if found.count() else ""

    first = live_src()
    train.first.click()
    started = time.monotonic()
    deadline = started + 300
    while time.monotonic() < deadline:
        src = live_src()
        if src and src != first and (not images or images[-1] != src):
            images.append(src)
        if table.last.locator("tr").count() > rows_before:
            break
        time.sleep(0.1)
    else:
        raise CheckFailed(f"{name}: after clicking Train the runs table did not grow within 300 s")
    seconds = time.monotonic() - started
    if len(images) < 3:
        raise CheckFailed(f"{name}: the live plot image was replaced {len(images)} time(s) during training (< 3)")
    panel.screenshot(path=str(SHOTS / f"{name}-experiment.png"))
    rows = table.last.locator("tr").count()
    return (
        f"embedding_size {before} -> {readout(embedding)}, {steps} steps: Train took {seconds:.1f} s, the live plot "
        f"was replaced {len(images)} times, the runs table grew {rows_before} -> {rows} rows"
    )


def check_05(page: Any, name: str) -> str:
    temperature = slider(page, "temperature", name)
    panel = panel_of(temperature)
    samples = panel.locator("pre")
    if samples.count() == 0:
        raise CheckFailed(f"{name}: the sampling panel shows no samples (<pre> blocks)")
    before = samples.all_inner_texts()
    type_into_readout(page, temperature, "0.1")
    wait_until(lambda: samples.all_inner_texts() != before, f"{name}: temperature 0.1 gave the same samples", 120)
    after = samples.all_inner_texts()
    prompt = os.path.commonprefix(after)
    if not all(text.strip() for text in after) or not prompt:
        raise CheckFailed(f"{name}: the new samples are empty or do not share the prompt: {after!r}")
    settle(panel)
    panel.screenshot(path=str(SHOTS / f"{name}-sampling.png"))
    return f"temperature {readout(temperature)}: {len(after)} new samples, e.g. {after[0][:60]!r}"


def _drive(
    pw: Any,
    exe: str | None,
    args: argparse.Namespace,
    chosen: list[str],
    base: str,
    token: str,
    timings: dict[str, float],
) -> int:
    """Start Chromium and check each chosen notebook; a failure leaves a screenshot of the page."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        root = hasattr(os, "getuid") and os.getuid() == 0
        flags = ["--no-sandbox"] if root else []  # Chromium's sandbox refuses to run as root
        browser = pw.chromium.launch(executable_path=exe, headless=not args.headed, args=flags)
    except PlaywrightError as error:
        print(
            f"test-browser: cannot start Chromium ({exe or 'Playwright bundled'}): {str(error)[:300]}\n"
            "Install it (Debian: apt-get install chromium) or set LLMLAB_CHROMIUM=/path/to/chrome."
        )
        return 2
    print(f"Chromium {browser.version} ({exe or 'Playwright bundled'}), JupyterLab at {base}")
    page = None
    try:
        for number in chosen:
            name = NOTEBOOKS[number]
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.set_default_timeout(60_000)
            started = time.monotonic()
            open_notebook(page, base, token, name)
            ran = run_all(page, name)
            page.screenshot(path=str(SHOTS / f"{name}.png"))
            if number == "03":
                said = check_03(page, name)
            elif number == "04b":
                said = check_04b(page, name, args.steps)
            else:
                said = check_05(page, name)
            timings[name] = time.monotonic() - started
            print(f"ok {name}: all cells ran in {ran:.0f} s; {said}")
            page.close()
            page = None
    except (CheckFailed, PlaywrightError) as error:
        if page is not None:
            shot = SHOTS / "failure.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot of the failure: {shot}")
            except PlaywrightError:
                pass
        print(f"test-browser FAILED: {error}")
        return 1
    finally:
        browser.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", default="03,04b,05", help="which of 03, 04b, 05 to check (default all three)")
    parser.add_argument("--steps", type=int, default=300, help="steps of the run started with Train in 04b")
    parser.add_argument("--headed", action="store_true", help="show the browser window")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.notebooks.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in NOTEBOOKS]
    if unknown or not chosen:
        parser.error(f"--notebooks={args.notebooks!r}: choose from {', '.join(NOTEBOOKS)}, e.g. --notebooks 04b")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("test-browser: playwright is not installed; `make test-browser` installs it (the `browser` extra)")
        return 2
    SHOTS.mkdir(parents=True, exist_ok=True)
    exe = find_chromium()
    token, port = secrets.token_hex(16), free_port()
    base = f"http://127.0.0.1:{port}"
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llmlab-browser-") as tmp_name:
        tmp = Path(tmp_name)
        lab = start_lab(tmp, port, token)
        try:
            wait_for_lab(port, token, lab, tmp / "lab.log")
            timings["JupyterLab start"] = time.monotonic() - t0
            with sync_playwright() as pw:
                status = _drive(pw, exe, args, chosen, base, token, timings)
        except CheckFailed as error:
            print(f"test-browser FAILED: {error}")
            status = 1
        finally:
            lab.terminate()
            try:
                lab.wait(timeout=20)
            except subprocess.TimeoutExpired:
                lab.kill()
    if status:
        return status
    total = time.monotonic() - t0
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    print(f"screenshots: {SHOTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
