"""The load benchmark's machinery in a few seconds (``make bench`` runs it whole):
the baseline stack starts in a virtual host and a database of its own, the load
generator drives it over HTTP, and the results hold what the table is read from.
Nothing here is timed; it checks that the figures come from real work."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("aiohttp", reason="bench/requirements.txt is not installed")


def test_the_baseline_under_the_load_generator(tmp_path):
    out = tmp_path / "load.json"
    finished = subprocess.run(
        [sys.executable, "-m", "bench.load", "--systems", "baseline", "--duration", "2", "--clients", "4",
         "--rate", "10", "--no-replicas", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    report = json.loads(out.read_text())
    baseline = report["results"]["baseline"]

    assert baseline["submit"]["completed"] > 0 and not baseline["submit"]["failures"]
    assert baseline["cycles"]["completed"] > 0 and not baseline["cycles"]["failures"]
    approvals = baseline["approval_to_offer"]
    assert approvals["started"] == 20 and not approvals["failures"]
    assert len(approvals["made"]["latencies"]) == len(approvals["seen"]["latencies"]) == 20
    # Every answered write is a row, every approval's event was handled into one.
    rows = report["rows"]["baseline"]
    assert rows["writes"] >= baseline["submit"]["completed"] + 6 * baseline["cycles"]["completed"] + 20
    assert rows["effects"] >= 3 * baseline["cycles"]["completed"] + 20

    table = {row["figure"]: row for row in report["table"]}
    assert table["POST /needs rate"]["baseline"] == baseline["submit"]["per_second"]
    assert table["POST /needs rate"]["lastmile"] is None
    assert table["approval→offer made p99"]["baseline"] is not None
    # CPU per request: the baseline's three processes, measured while they worked.
    assert set(baseline["submit"]["cpu_seconds"]) == {"baseline:writer-1", "baseline:effects-1", "baseline:http-1"}
    assert table["CPU per POST /needs"]["baseline"] > 0 and table["CPU per cycle"]["baseline"] > 0
    assert out.with_suffix(".png").stat().st_size > 0
    assert "POST /needs rate" in finished.stdout
