"""A path typed into the Prefect UI's import_dataset form reads only under the import folder;
the CLI and Python keep taking any path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datamodules.errors import DataError
from datamodules.userdata import confine


@pytest.fixture
def folders(tmp_path):
    root, outside = tmp_path / "import", tmp_path / "private"
    (root / "audio").mkdir(parents=True)
    outside.mkdir()
    (outside / "secrets.csv").write_text("load\n1\n")
    (root / "site.csv").write_text("load\n1\n")
    return root, outside


def test_a_path_inside_the_import_folder_is_taken_and_a_relative_one_read_there(folders):
    root, _ = folders
    assert confine(str(root / "site.csv"), root) == (root / "site.csv").resolve()
    assert confine("site.csv", root) == (root / "site.csv").resolve()
    assert confine(str(root / "audio" / ".." / "site.csv"), root) == (root / "site.csv").resolve()


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlinked file", "symlinked folder",
                                    "link inside a folder"])
def test_a_path_that_resolves_outside_the_import_folder_is_refused(folders, escape):
    root, outside = folders
    if escape == "dotdot":
        source = str(root / ".." / "private" / "secrets.csv")
    elif escape == "absolute":
        source = str(outside / "secrets.csv")
    elif escape == "symlinked file":
        (root / "innocent.csv").symlink_to(outside / "secrets.csv")
        source = str(root / "innocent.csv")
    elif escape == "symlinked folder":
        (root / "shared").symlink_to(outside, target_is_directory=True)
        source = str(root / "shared" / "secrets.csv")
    else:  # a folder source (audio clips) with one link leading out
        (root / "audio" / "clip.wav").symlink_to(outside / "secrets.csv")
        source = str(root / "audio")
    with pytest.raises(DataError, match="outside the import folder; a run started from a deployment "
                                        f"reads only under the import folder {root.resolve()}"):
        confine(source, root)


def test_a_deployment_run_of_import_dataset_refuses_a_path_outside_before_reading_it(
        folders, monkeypatch, tmp_path):
    from flows import pipeline

    root, outside = folders
    read = []
    monkeypatch.setattr(pipeline.userdata, "make_spec", lambda *a, **k: read.append(a))
    monkeypatch.setenv("RNNBENCH_IMPORT_ROOT", str(root))
    monkeypatch.setattr(pipeline, "_trigger", lambda: ("deployment", "run-id", 1))
    (root / "link.csv").symlink_to(outside / "secrets.csv")
    with pytest.raises(DataError, match="link.csv: outside the import folder"):
        # the form may also name another home: the import folder stays the serving process's
        pipeline.import_dataset.fn(str(root / "link.csv"), "timeseries", "x", {"target": "load"},
                                   home=str(tmp_path / "elsewhere"))
    assert read == [] and not (tmp_path / "elsewhere").exists()


def test_a_deployment_run_imports_a_file_named_relative_to_the_import_folder(
        prefect_harness, monkeypatch, tmp_path):
    from flows import pipeline

    root = tmp_path / "import"
    root.mkdir()
    n = 300
    pd.DataFrame({"load": 10 + np.sin(np.arange(n) * 2 * np.pi / 24)}).to_csv(root / "site.csv", index=False)
    monkeypatch.setenv("RNNBENCH_IMPORT_ROOT", str(root))
    monkeypatch.setattr(pipeline, "_trigger", lambda: ("deployment", None, 1))
    result = pipeline.import_dataset("site.csv", "timeseries", "site-from-ui",
                                     {"target": "load", "window": 24, "horizon": 6})
    assert result["site-from-ui"]["manifest"]["dataset"] == "site-from-ui"
    from datamodules.userdata import load_registry
    from flows.settings import load_settings

    entry = load_registry(load_settings().data_root)["site-from-ui"]
    assert entry["source"] == str((root / "site.csv").resolve())  # read in the import folder
