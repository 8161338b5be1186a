"""benchmarks/fault_probes.py runs its probes and classifies them: two fast ones here (the whole set takes ~11
minutes and runs by hand)."""
import subprocess
import sys

from helpers import ROOT


def test_the_fault_probes_classify_a_bad_setting_and_a_url_workdir_as_one_line_errors():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fault_probes.py"), "--only", "bounds-b1",
                           "analysis-url"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| bounds-b1") or
            line.startswith("| analysis-url")]
    assert len(rows) == 2 and all("| one-line error |" in row for row in rows), done.stdout
    assert "one-line error: 2" in done.stdout, done.stdout
