"""Headless Chromium for the report tests: find it, or install Debian's package once.

Two pytest-xdist workers may ask at the same time, so the install runs under an exclusive
`fcntl` lock on a file in the temp folder; the second worker waits, then finds the binary.
A failed install leaves a short-lived marker so the other worker skips at once instead of
retrying a slow apt run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
LOCK = Path(tempfile.gettempdir()) / "lymphosort-chromium-install.lock"
FAILED = LOCK.with_suffix(".failed")
FAILED_TTL_S = 900  # a failure is trusted for one test session's length, then retried
UPDATE_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 900


def find_chromium() -> str | None:
    for c in CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _recent_failure() -> str | None:
    try:
        if time.time() - FAILED.stat().st_mtime < FAILED_TTL_S:
            return FAILED.read_text() or "an earlier install attempt failed"
    except OSError:
        pass
    return None


def _apt(args: list[str], timeout: float) -> str | None:
    """Run apt-get; None on success, else a one-line reason."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        r = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"`apt-get {' '.join(args)}` ran past {timeout:.0f} s"
    except OSError as exc:
        return f"`apt-get` could not start: {exc}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"`apt-get {' '.join(args)}` exited {r.returncode}: {tail[0]}"
    return None


def ensure_chromium() -> tuple[str | None, str]:
    """(path to chromium, "") or (None, why it is not available)."""
    found = find_chromium()
    if found:
        return found, ""
    if os.geteuid() != 0:
        return None, "chromium is not installed and the tests do not run as root (apt-get install -y chromium)"
    if shutil.which("apt-get") is None:
        return None, "chromium is not installed and there is no apt-get"
    with open(LOCK, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # blocks while another worker installs
        try:
            found = find_chromium()
            if found:
                return found, ""
            failed = _recent_failure()
            if failed:
                return None, failed
            why = _apt(["update"], UPDATE_TIMEOUT_S) or _apt(
                ["install", "-y", "--no-install-recommends", "chromium"], INSTALL_TIMEOUT_S
            )
            found = find_chromium()
            if found:
                return found, ""
            why = f"could not install chromium: {why or 'apt-get reported success but no binary'}"
            FAILED.write_text(why)
            return None, why
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
