"""Drive a headless Chromium on LEADERBOARD.html: dump the DOM after the page's self-test, or take a screenshot.

Usage:
    $ python -m bench.report.browser screenshot results/LEADERBOARD.html docs/example/leaderboard.png [W H]
    >>> from bench.report.browser import find_chromium, selftest
    >>> selftest(find_chromium(), Path("results/LEADERBOARD.html"))    # what ?selftest=1 recorded (a dict)

Chromium comes from Debian's `chromium` package (`bash tests/install_chromium.sh`); BENCH_CHROMIUM names another
binary. No WebDriver, no downloads: `--dump-dom` and `--screenshot` of the stock browser.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.errors import BenchError

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """BENCH_CHROMIUM, else the first Chromium/Chrome on PATH, else None."""
    env = os.environ.get("BENCH_CHROMIUM")
    if env:
        return shutil.which(env) or (env if os.access(env, os.X_OK) else None)
    return next((p for p in map(shutil.which, NAMES) if p), None)


def _run(exe: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{exe} did not finish within {timeout:.0f} s") from None


def dump_dom(exe: str, url: str, timeout: float = 120) -> str:
    """The page's DOM after load (and `--virtual-time-budget` of scripts)."""
    proc = _run(exe, ["--virtual-time-budget=10000", "--dump-dom", url], timeout)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise BenchError(f"chromium --dump-dom failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    return proc.stdout


def selftest(exe: str, page: Path) -> dict:
    """Open `page` with ?selftest=1 and return the JSON the page wrote into <body data-selftest>."""
    dom = dump_dom(exe, Path(page).resolve().as_uri() + "?selftest=1")
    m = re.search(r'data-selftest="([^"]*)"', dom)
    if not m:
        raise BenchError("the page did not record its self-test (JavaScript did not run?)")
    return json.loads(html.unescape(m.group(1)))


def screenshot(exe: str, page: Path, out: Path, width: int = 1400, height: int = 2000, query: str = "ci=1") -> Path:
    """A PNG of the top `width`×`height` pixels of `page` (`query`: ci=1 shows the intervals inline)."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = _run(exe, [f"--window-size={width},{height}", "--virtual-time-budget=5000", f"--screenshot={out}",
                      Path(page).resolve().as_uri() + (f"?{query}" if query else "")], 120)
    if proc.returncode != 0 or not out.is_file():
        raise BenchError(f"chromium --screenshot failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[0] != "screenshot":
        print("usage: python -m bench.report.browser screenshot PAGE.html OUT.png [WIDTH HEIGHT]", file=sys.stderr)
        return 2
    exe = find_chromium()
    if not exe:
        print("no Chromium found: bash tests/install_chromium.sh, or set BENCH_CHROMIUM", file=sys.stderr)
        return 1
    size = [int(x) for x in argv[3:5]]
    print(screenshot(exe, Path(argv[1]), Path(argv[2]), *size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
