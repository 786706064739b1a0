"""The HTML report in a real browser: it loads offline and every image decodes."""

from __future__ import annotations

import html
import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from lymphosort.report import build_report
from tests.report.helpers import N_IMAGES_FULL, make_run

pytestmark = pytest.mark.browser

#: Appended to a copy of the report (the report itself has no script): after `load`, write
#: what the page holds into the DOM, where --dump-dom can read it.
CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var result = {
    images: imgs.length,
    decoded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; }),
    sections: document.querySelectorAll('main > section').length,
    fetched: performance.getEntriesByType('resource').map(function (e) { return e.name; }),
    title: document.title
  };
  var pre = document.createElement('pre');
  pre.id = 'report-check';
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>
"""


def _load_in_chromium(chromium: str, page: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing may leave the machine
            f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri(),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    m = re.search(r'<pre id="report-check">(.*?)</pre>', r.stdout, re.S)
    assert m, f"no check result in the dumped DOM (exit {r.returncode}); stderr tail:\n{r.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


def test_report_loads_in_headless_chromium_with_every_image(chromium: str, tmp_path: Path) -> None:
    evil = "<img src=x onerror=\"document.title='pwned'\">"
    run = make_run(tmp_path / "run", classes=("B", evil, "<script>document.title='pwned'</script>"), student_label=evil)
    report = build_report(run)[0].read_text(encoding="utf-8")
    assert "<script" not in report
    page = tmp_path / "check.html"
    page.write_text(report.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    got = _load_in_chromium(chromium, page)
    assert got["images"] == N_IMAGES_FULL, got
    assert got["decoded"] == N_IMAGES_FULL and not got["broken"], got
    assert got["sections"] == 9
    assert got["fetched"] == [], "the report must not load anything from outside the file"
    assert got["title"].startswith("lymphosort report") and "pwned" not in got["title"]


def test_the_check_sees_a_broken_image(chromium: str, tmp_path: Path) -> None:
    """Guards the test above: a corrupt embedded image must show up as not decoded."""
    run = make_run(tmp_path / "run", stages=["data", "embedding"])
    report = build_report(run)[0].read_text(encoding="utf-8")
    # keep the PNG signature (so it is still an <img>) but cut the data after it
    broken = re.sub(r'(src="data:image/png;base64,)([^"]{12})[^"]*"', r'\1\2"', report, count=1)
    assert broken != report
    page = tmp_path / "broken.html"
    page.write_text(broken.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    got = _load_in_chromium(chromium, page)
    assert (got["images"], got["decoded"]) == (2, 1), got
