"""Sweep scaling: a benchmark's sweeps side by side (the default) vs one after another.

Runs ``rnnbench run`` twice on the same preset from the same prepared data, once with
``max_concurrent_sweeps = 1`` (one after another, as before sweeps ran side by side) and once
as shipped (as many sweeps as the Ray instance has trial slots, plus one), and prints the
ratio of their wall-clock times (target: side by side at least 1.3x faster). Each side is a
whole benchmark (Prefect, Ray, MLflow, every sweep), so one pair takes about as long as two
quick benchmarks (about 15 minutes on 2 cores); the sides alternate when ``--repeats`` > 1.
``--smoke`` runs the test preset (2 sweeps of 2 tiny trials).

Usage: python -m benchmarks.sweep_scaling [--preset quick] [--repeats 1] [--smoke]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Callable

from benchmarks.common import finish, parser, report, spread

ROOT = Path(__file__).resolve().parents[1]
RNNBENCH = str(Path(sys.executable).parent / "rnnbench")
TARGET = 1.3
SMOKE_PRESET = ROOT / "tests" / "presets" / "tiny.toml"


def preset_text(preset: str) -> str:
    path = Path(preset) if preset.endswith(".toml") else ROOT / "flows" / "presets" / f"{preset}.toml"
    return path.read_text()


def one_after_another(text: str) -> str:
    assert "[budget]" in text and "max_concurrent_sweeps" not in text
    return text.replace("[budget]", "[budget]\nmax_concurrent_sweeps = 1", 1)


def run(preset: Path, home: Path, data: Path) -> tuple[float, float]:
    """``rnnbench run`` of ``preset`` in ``home`` on the prepared ``data``; its start and end
    (seconds since the epoch)."""
    home.mkdir(parents=True)
    (home / "data").symlink_to(data)  # the same prepared artifacts: only the sweeps differ
    env = run_env(home)
    start = time.time()
    done = subprocess.run([RNNBENCH, "run", "--preset", str(preset)], env=env, capture_output=True, text=True)
    end = time.time()
    if done.returncode != 0:
        raise SystemExit(f"rnnbench run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return start, end


def run_env(home: Path) -> dict[str, str]:
    """The environment of a benchmark's ``rnnbench run``: its own home, none of the caller's
    Prefect, MLflow or Ray targets, and a longer wait for Prefect's temporary API (20 s by
    default: at load average 20 on 2 cores it did not start in time and the run failed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "RAY_ADDRESS"))}
    env.update(RNNBENCH_HOME=str(home), COLUMNS="120",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=os.environ.get(
                   "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
    return env


def prepare(names: list[str], data: Path) -> None:
    """The preset's datasets prepared into ``data``, in this process (no CLI or Prefect start)."""
    from datamodules import catalog
    from flows.settings import load_settings

    scratch = data.parent / "prepare"
    data_root = load_settings(home=scratch).data_root
    for name in names:
        catalog.prepare(name, data_root)
    shutil.move(str(data_root), data)
    shutil.rmtree(scratch)


def measure(preset: str, repeats: int, smoke: bool,
            side_by_side: Callable[[Path, float, float], None] | None = None) -> bool:
    """Run the benchmark; print and save its line. ``side_by_side(home, start, end)`` is called
    after each side-by-side run, while its rnnbench home still exists."""
    text = preset_text(preset)
    with tempfile.TemporaryDirectory(prefix="rnnbench-sweep-scaling-") as tmp:
        root = Path(tmp)
        sides = {"one_after_another": root / "sequential.toml", "side_by_side": root / "side_by_side.toml"}
        sides["one_after_another"].write_text(one_after_another(text))
        sides["side_by_side"].write_text(text)
        data = root / "data"
        prepare(tomllib.loads(text).get("datasets") or [], data)
        times: dict[str, list[float]] = {name: [] for name in sides}
        for round_ in range(repeats):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for name in order:
                home = root / f"{name}-{round_}"
                start, end = run(sides[name], home, data)
                times[name].append(end - start)
                print(f"  {name}: {times[name][-1]:.1f} s", flush=True)
                if name == "side_by_side" and side_by_side is not None:
                    side_by_side(home, start, end)
    ratio = spread(times["one_after_another"])["median"] / spread(times["side_by_side"])["median"]
    note = (f"{Path(preset).stem}: one after another {spread(times['one_after_another'])['median']:.0f} s, "
            f"side by side {spread(times['side_by_side'])['median']:.0f} s (median of {repeats})")
    return report("sweep_scaling", ratio, ">=", TARGET, note, raw=times, smoke=smoke)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    preset = str(SMOKE_PRESET) if args.smoke else args.preset
    finish(measure(preset, args.repeats, args.smoke), args.smoke)


if __name__ == "__main__":
    main()
