"""Regenerate the README's demo table and docs/html-report.png from the current fixtures.

Run ``make docs``. The demo block in README.md sits between the ``demo:start`` / ``demo:end``
comments; ``--check`` exits 1 when it differs from what ``make demo`` prints now (a test runs
that check, so the README cannot go stale). The screenshot needs headless Chromium
(Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SCREENSHOT = REPO / "docs" / "html-report.png"
DEMO = ["audit", "fixtures/models/cnn_dead.pt2", "--calib", "fixtures/data/cnn_images.npy"]
BLOCK = re.compile(r"(<!-- demo:start -->\n```text\n)(.*?)(```\n<!-- demo:end -->)", re.S)


def demo_output(extra: list[str] | None = None) -> str:
    """What ``make demo`` prints: the CLI in a child process, full width, as a file would get it."""
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "actaudit", *DEMO, *(extra or [])]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise SystemExit(f"the demo failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def readme_block(text: str) -> str:
    m = BLOCK.search(text)
    if m is None:
        raise SystemExit("README.md has no <!-- demo:start --> ``` … ``` <!-- demo:end --> block")
    return m.group(2)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def screenshot(html: Path, png: Path, browser: str, size: tuple[int, int] = (1000, 900)) -> None:
    """``html`` drawn by headless ``browser`` into ``png`` (``size`` in CSS pixels), offline."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={png}",
            html.as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 if the README is stale")
    a = ap.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    now = demo_output()
    if a.check:
        if readme_block(text) != now:
            print("README.md's demo table is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    readme_block(text)  # fail before writing anything when the markers are missing
    README.write_text(BLOCK.sub(lambda m: m.group(1) + now + m.group(3), text), encoding="utf-8")
    print("README.md: demo table updated", file=sys.stderr)
    browser = chromium()
    if browser is None:
        print("no chromium on PATH: docs/html-report.png left as it is", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        demo_output(["--html", str(html), "-q"])
        screenshot(html, SCREENSHOT, browser)
    print(f"{SCREENSHOT.relative_to(REPO)}: written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
