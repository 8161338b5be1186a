"""The report's first screen, as headless Chromium draws it at 1280 x 800: the page renders (a non-blank PNG) and
the answer block starts within the first 800 px, ahead of the regime. Skipped where Chromium is not installed
(.ci/run installs it where apt-get can)."""
import re
import shutil
import subprocess
import zlib

import pytest

from analysis.cli import main
from synthetic_store import Plant, write_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
SCREEN = (1280, 800)
# Written into the DOM after layout: where the answer block and the regime start, in CSS pixels from the top.
LAYOUT = """<script>
addEventListener("load", () => {
  const top = id => Math.round(document.getElementById(id).getBoundingClientRect().top + scrollY);
  document.body.dataset.layout = `answer=${top("answer")} regime=${top("regime")}`;
});
</script>"""


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={SCREEN[0]},{SCREEN[1]}",
                           *args], capture_output=True, text=True, timeout=180)


def _png_pixels(path):
    """Width, height and the distinct scanlines of an 8-bit RGB(A) PNG (enough to tell a blank page)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        kind = data[at + 4:at + 8]
        chunks.setdefault(kind, []).append(data[at + 8:at + 8 + size])
        at += 12 + size
    header = chunks[b"IHDR"][0]
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    return width, height, raw


def test_the_first_screen_of_the_report_holds_the_answer(tmp_path):
    plant = Plant(seeds=3, priors=("high",), lrs=("medium", "large"), spurious=(0.0,),
                  kind=lambda lr, prior, s: "wrapper" if lr == "medium" else "overwrite")
    store = write_store(tmp_path / "run", plant)
    out = tmp_path / "report"
    assert main(["report", str(store), "--out", str(out)]) == 0
    page = out / "index.html"
    shot = out / "first-screen.png"
    done = _chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    assert shot.exists(), done.stderr[-2000:]
    width, height, raw = _png_pixels(shot)
    assert (width, height) == SCREEN
    assert len(set(raw[i * len(raw) // height + 1:(i + 1) * len(raw) // height] for i in range(height))) > 50, \
        "the first screen is (nearly) blank"
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", LAYOUT + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'data-layout="answer=(\d+) regime=(\d+)"', dom)
    assert found, dom[:2000]
    answer, regime = map(int, found.groups())
    assert answer < SCREEN[1] and answer < regime
    assert "What this run found" in dom
