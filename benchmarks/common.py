"""What every benchmark shares: the machine's facts, sides timed interleaved (A B A B ...) so a
neighbour's load hits both alike, and the one summary line plus a JSON file of raw timings.

Imports only the standard library, numpy and torch (and pytorch_lightning for its version), so
the GPU benchmark stays free of Ray, MLflow and Prefect."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import pytorch_lightning as pl
    import torchmetrics

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:  # no /proc/cpuinfo (macOS): the model stays "unknown"
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_count": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__, "lightning": pl.__version__,
            "torchmetrics": torchmetrics.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": gpu}


def timeit_interleaved(sides: Mapping[str, Callable[[], Any]], repeats: int,
                       warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each side, calling them in turn (A B A B ...) ``repeats`` times after
    ``warmup`` untimed rounds, so that load from elsewhere falls on every side alike."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(warmup + repeats):
        for name, fn in sides.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Round by round ratios: each pair ran back to back, under the same load."""
    return [a / b for a, b in zip(numerator, denominator)]


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and the interquartile range of ``values``."""
    vals = sorted(values)
    q = statistics.quantiles(vals, n=4) if len(vals) >= 2 else [vals[0]] * 3
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1],
            "q1": q[0], "q3": q[2], "n": len(vals)}


def passes(ratio: float, op: str, target: float) -> bool:
    return ratio <= target if op == "<=" else ratio >= target


def report(name: str, ratio: float, op: str, target: float, note: str = "",
           raw: Mapping[str, Any] | None = None, smoke: bool = False, also: bool = True) -> bool:
    """Print ``bench <name>: ratio=<r> target<op><t> PASS|MISS [note]`` and write
    ``results/<name>.json`` (``results/smoke/`` for smoke runs, which git ignores). ``also``: a
    second condition the benchmark must meet to pass (its note says what it is)."""
    ok = passes(ratio, op, target) and also
    line = f"bench {name}: ratio={ratio:.3f} target{op}{target:g} {'PASS' if ok else 'MISS'}"
    if note:
        line += f"  {note}"
    print(line, flush=True)
    folder = RESULTS / "smoke" if smoke else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "ratio": ratio, "op": op, "target": target, "pass": ok,
               "smoke": smoke, "note": note, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
               "machine": machine(), "raw": dict(raw or {})}
    tmp = folder / f".{name}.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / f"{name}.json")
    return ok


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes and repeats, results under results/smoke/, always exit 0")
    return p


def finish(all_ok: bool, smoke: bool) -> None:
    """Exit 1 on any MISS in a full run; a smoke run only proves the benchmark still runs."""
    sys.exit(0 if smoke or all_ok else 1)
