"""`make` installs exact versions from infra/requirements.lock, and those are what the tests run on.

pyproject.toml keeps ranges for people who install rnnbench as a library; the lock pins every
runtime and test dependency except torch, whose CPU or CUDA build TORCH_SPEC in the Makefile picks.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "infra" / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s+;@]+)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock_lines() -> list[str]:
    lines = [line.strip() for line in LOCK.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _pins() -> dict[str, str]:
    return {_canonical(m[1]): m[2] for m in map(PIN.match, _lock_lines()) if m}


def _direct_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    specs = project["dependencies"] + extras["test"] + extras["service"]
    names = [_canonical(re.match(r"[A-Za-z0-9._-]+", spec)[0]) for spec in specs]
    return [name for name in names if name != "torch"]


def _makefile() -> tuple[dict[str, str], dict[str, tuple[str, list[str]]]]:
    """The Makefile's variables, and each rule's prerequisites and recipe lines (comments left out)."""
    text = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^(\w+) [:?]?= (.*)$", text, re.M))
    rules, lines = {}, text.splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"^([^\s#=:]+):(?!=)(.*)$", line):
            recipe = []
            for step in lines[i + 1:]:
                if not step.startswith("\t"):
                    break
                if not step.lstrip("\t@").startswith("#"):
                    recipe.append(step)
            rules[m[1]] = (m[2], recipe)
    return variables, rules


def test_lock_holds_no_torch_nvidia_or_triton_line():
    # torch comes from TORCH_SPEC; nvidia-* and triton would mean the lock was resolved against a
    # CUDA torch and would pull gigabytes onto CPU machines
    forbidden = re.compile(r"^(torch\s*([=<>!~@;\[]|$)|nvidia-|triton)", re.I)
    assert [line for line in _lock_lines() if forbidden.match(line)] == []


def test_lock_lines_are_plain_exact_pins_that_depend_on_no_machine():
    # no file:// or URL, no editable or -e line, no +cpu local version, no rnnbench itself
    assert [line for line in _lock_lines() if not PIN.match(line)] == []
    assert "rnnbench" not in _pins()


def test_every_direct_dependency_is_pinned_in_the_lock():
    pins = _pins()
    assert [name for name in _direct_dependencies() if name not in pins] == []


def test_the_installed_versions_are_the_locked_ones():
    # CI installs through `make`, so this is what makes "CI tests the lock" true; it covers the
    # direct dependencies and everything they pull in
    mismatched = {}
    for name, pinned in _pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            mismatched[name] = (pinned, installed)
    assert mismatched == {}, "(locked, installed); run `make install` again after changing the lock"
    assert set(_direct_dependencies()) <= set(_pins())


def test_make_installs_torch_then_the_lock_then_rnnbench_without_dependencies():
    variables, rules = _makefile()
    assert variables["LOCK"] == "infra/requirements.lock"
    prerequisites, recipe = rules["$(STAMP)"]
    # a changed lock or pyproject.toml reinstalls
    assert {"pyproject.toml", "$(LOCK)"} <= set(prerequisites.split())
    installs = [line for line in recipe if "$(PIP)" in line and "--upgrade pip" not in line]
    torch_step, lock_step, project_step = installs  # exactly these three installs, in this order
    assert "$(PIP) $(TORCH_SPEC) " in torch_step
    assert "$(PIP) -r $(LOCK) " in lock_step
    assert "--no-deps" in project_step and "editable_mode=compat" in project_step
