"""The benchmark helpers' contract: one parseable summary line, smoke results kept out of git,
sides timed in turn, and a GPU benchmark that a bare host without Ray, MLflow or Prefect runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]


def test_report_prints_the_summary_line_and_keeps_smoke_results_apart(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert common.report("demo", 1.5, "<=", 1.05, "a note", {"x": [1.0]}, smoke=True) is False
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"bench demo: ratio=1\.500 target<=1\.05 MISS  a note", line)
    saved = json.loads((tmp_path / "smoke" / "demo.json").read_text())
    assert saved["raw"] == {"x": [1.0]} and saved["machine"]["cpu_count"] >= 1
    assert not (tmp_path / "demo.json").exists()
    assert common.report("demo", 6.0, ">=", 5, smoke=False) is True
    assert capsys.readouterr().out.strip() == "bench demo: ratio=6.000 target>=5 PASS"


def test_timeit_interleaved_alternates_sides_and_drops_warmup():
    calls = []
    times = common.timeit_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                      repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert [len(v) for v in times.values()] == [3, 3]


def test_smoke_results_are_ignored_by_git():
    ignored = subprocess.run(["git", "check-ignore", "-q", "benchmarks/results/smoke/x.json"], cwd=ROOT)
    assert ignored.returncode == 0


def test_gpu_benchmark_imports_no_ray_mlflow_or_prefect():
    code = ("import sys, benchmarks.gpu; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow', 'prefect'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
