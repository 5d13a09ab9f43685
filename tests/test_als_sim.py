"""The als_sim experiments run end to end (``run_all.py --quick``) and write small PNGs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ["als_vs_em.png", "convergence.png", "scaling.png", "coverage.png"]

pytest.importorskip("matplotlib")
pytest.importorskip("pandas")  # the coverage experiment reads SUR results


def test_run_all_quick(tmp_path):
    # the documented command, in a fresh process (the experiments import by
    # folder, so keep their module names out of the test session)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "als_sim" / "run_all.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all done" in proc.stdout
    for name in FIGURES:
        png = tmp_path / name
        assert png.exists(), name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < 100_000, f"{name} is {png.stat().st_size} bytes (limit 100 KB)"
    # ALS and EM reach the same optimum: NLL relative difference (second column
    # of the ALS vs EM table) below the 1e-6 that issue 2 asks of the solvers
    lines = proc.stdout.split("ALS vs EM:")[1].split("wrote")[0].splitlines()
    rows = [ln.split("|")[1:-1] for ln in lines if ln.startswith("|") and ln[2:3] != "-"][1:]
    assert rows, proc.stdout
    assert all(float(r[1]) < 1e-6 for r in rows), rows


def test_committed_figures_are_small():
    for name in FIGURES:
        png = ROOT / "als_sim" / "figures" / name
        if png.exists():
            assert png.stat().st_size < 100_000, name


def test_quick_runs_never_write_the_committed_figures():
    """``--quick`` without ``--out`` writes to a new temporary folder; only a
    full run defaults to als_sim/figures."""
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.path.insert(0, 'als_sim'); from _common import output_folder, parser\n"
         "from pathlib import Path\n"
         "print(output_folder(None, True)); print(output_folder(None, False))\n"
         "print(parser('x').parse_args(['--quick']).out)\n"
         "print(output_folder(Path('/tmp/x'), True))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    quick, full, script_quick, given = [Path(p) for p in proc.stdout.split()]
    committed = ROOT / "als_sim" / "figures"
    assert full == committed
    for tmp in (quick, script_quick):
        assert tmp.is_dir() and tmp.resolve() != committed.resolve()
        tmp.rmdir()                                   # created empty by mkdtemp
    assert given == Path("/tmp/x")
