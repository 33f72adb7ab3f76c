"""Bring-your-own data: each format prepares like a built-in set, and each kind of bad file
gets one clear message naming the file, row or field, without costing the last good artifact."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from datamodules.artifact import load_split, read_extra
from datamodules.catalog import available, prepare, register
from datamodules.errors import DataError
from datamodules.userdata import load_registry


def _series_csv(path, n=400, bad=None):
    """Hourly load with a daily cycle and a temperature column; ``bad`` = {(row, col): text}."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "time": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
        "load": (10 + np.sin(np.arange(n) * 2 * np.pi / 24) + rng.normal(0, 0.1, n)).round(4),
        "temp": rng.normal(size=n).round(4),
    }).astype(object)
    for (row, col), text in (bad or {}).items():
        frame.loc[row, col] = text
    frame.to_csv(path, index=False)
    return path


def _reviews(path, labels=None, n=60, encoding="utf-8", long_row=None):
    labels = labels or ["pos", "neg"] * (n // 2)
    texts = [(f"a great film, loved it, take {i}" if l == "pos" else f"dull and far too long, take {i}")
             for i, l in enumerate(labels)]  # distinct texts: duplicates would share a split
    if long_row is not None:
        texts[long_row] = " ".join(["word"] * 500)
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv(path, index=False, encoding=encoding)
    return path


def _clips(root, rates=(16000,), speakers=4, per_label=8, seconds=0.3):
    for label, freq in (("low", 300.0), ("high", 1200.0)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            rate = rates[i % len(rates)]
            t = np.arange(int(rate * seconds)) / rate
            sf.write(root / label / f"spk{i % speakers}_{i}.wav", 0.3 * np.sin(2 * np.pi * freq * t), rate)
    return root


def _error(tmp_path, name, kind, source, **options) -> str:
    with pytest.raises(DataError) as info:
        register(name, kind, source, options, tmp_path / "data")
    return str(info.value)


# ---------------------------------------------------------------- each format works

def test_a_timeseries_csv_with_a_time_column_forecasts_its_target(tmp_path):
    path = _series_csv(tmp_path / "load.csv")
    shuffled = pd.read_csv(path).sample(frac=1.0, random_state=0)  # rows out of order
    shuffled.to_csv(path, index=False)
    artifact, manifest, _ = register("load", "timeseries", path, {"target": "load",
                                     "time_column": "time", "window": 48, "horizon": 24,
                                     "season": 24}, tmp_path / "data")
    assert manifest["task"] == "forecasting" and manifest["input_dim"] == 2
    assert read_extra(artifact, "channels") == ["load", "temp"] and manifest["target_channel"] == 0
    train = load_split(artifact, "train")
    # sorted by time again: each window's next target is the step after its inputs
    assert np.allclose(train.x[1][-1, 0], train.y[0][0], atol=1e-6)


def test_a_parquet_series_prepares_like_a_csv(tmp_path):
    csv = _series_csv(tmp_path / "load.csv")
    pd.read_csv(csv).to_parquet(tmp_path / "load.parquet")
    _, a, _ = register("a", "timeseries", csv, {"target": "load", "time_column": "time"}, tmp_path / "d")
    _, b, _ = register("b", "timeseries", tmp_path / "load.parquet",
                       {"target": "load", "time_column": "time"}, tmp_path / "d")
    assert a["splits"] == b["splits"]


def test_labelled_text_from_csv_and_jsonl_and_a_txt_language_model(tmp_path):
    csv = _reviews(tmp_path / "reviews.csv")
    _, m, _ = register("reviews", "text", csv, {"text_column": "review", "label_column": "sentiment"},
                       tmp_path / "data")
    assert m["task"] == "classification" and m["num_classes"] == 2
    pd.read_csv(csv).to_json(tmp_path / "reviews.jsonl", orient="records", lines=True)
    _, j, _ = register("reviews-jsonl", "text", tmp_path / "reviews.jsonl",
                       {"text_column": "review", "label_column": "sentiment"}, tmp_path / "data")
    assert j["splits"] == m["splits"]
    (tmp_path / "book.txt").write_text("It was the best of times, it was the worst of times. " * 200)
    artifact, lm, _ = register("book", "text", tmp_path / "book.txt", {"level": "word", "seq_len": 16},
                               tmp_path / "data")
    assert lm["task"] == "language-model"
    assert {"times", ",", "."} <= set(read_extra(artifact, "vocab"))


def test_an_audio_folder_is_featurized_with_speakers_kept_apart(tmp_path):
    root = _clips(tmp_path / "clips", speakers=4)
    artifact, m, _ = register("tones", "audio", root, {"group_pattern": r"^(spk\d)_"},
                              tmp_path / "data")
    assert m["input_dim"] == 40 and m["num_classes"] == 2
    clips = read_extra(artifact, "clips")
    speakers = {s: {clips[i].split("/")[1].split("_")[0] for i in load_split(artifact, s).ids}
                for s in ("train", "val", "test")}
    assert not (speakers["train"] & speakers["test"]) and not (speakers["val"] & speakers["test"])
    assert not (speakers["train"] & speakers["val"])


def test_mixed_sample_rates_are_resampled_not_rejected(tmp_path):
    root = _clips(tmp_path / "clips", rates=(16000, 22050, 8000))
    artifact, m, _ = register("tones", "audio", root, {}, tmp_path / "data")
    assert m["sample_rates"] == {"16000": 6, "22050": 6, "8000": 4}
    # 0.3 s at any rate gives the same number of 10 ms frames at 16 kHz
    assert m["splits"]["train"]["length_min"] == m["splits"]["train"]["length_max"] == 28


def test_npz_sequences_ragged_or_padded_with_lengths(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(rng.integers(3, 9), 2)).astype(np.float32) for _ in range(40)]
    np.savez(tmp_path / "ragged.npz", X=np.concatenate(seqs), lengths=[len(s) for s in seqs],
             y=np.arange(40) % 2)
    artifact, m, _ = register("ragged", "sequences", tmp_path / "ragged.npz", {}, tmp_path / "data")
    assert m["task"] == "classification" and 3 <= m["splits"]["train"]["length_min"]
    train = load_split(artifact, "train")
    assert [len(s) for s in train.x] == [len(seqs[i]) for i in train.ids]
    padded = rng.normal(size=(40, 10, 2)).astype(np.float32)
    lengths = rng.integers(2, 11, size=40)
    np.savez(tmp_path / "padded.npz", X=padded, y=rng.normal(size=40), lengths=lengths)
    artifact, m, _ = register("padded", "sequences", tmp_path / "padded.npz", {}, tmp_path / "data")
    assert m["task"] == "regression" and m["outputs"] == 1
    train = load_split(artifact, "train")
    assert [len(s) for s in train.x] == lengths[train.ids].tolist()


def test_an_npz_of_python_objects_is_refused_without_unpickling_it(tmp_path):
    # an object array is a pickle: loading it may run code, so it is named and refused
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.zeros((n, 2), dtype=np.float32) for n in (2, 3, 4)]
    np.savez(tmp_path / "objects.npz", X=ragged, y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match="does not unpickle since loading them could run code; save "
                                        r"variable-length sequences as np.savez\(path, X=np.concatenate"):
        register("objects", "sequences", tmp_path / "objects.npz", {}, tmp_path / "data")


def test_a_registered_name_is_listed_and_prepared_like_a_built_in(tmp_path):
    path = _series_csv(tmp_path / "load.csv")
    artifact, first, _ = register("load", "timeseries", path, {"target": "load", "time_column": "time"}, tmp_path / "data")
    assert "load" in available(tmp_path / "data")
    again, manifest, reused = prepare("load", tmp_path / "data")
    assert reused and again == artifact and manifest["content_hash"] == first["content_hash"]
    # a preset may change a parameter: prepared afresh from the same source
    other, changed, reused = prepare("load", tmp_path / "data", {"window": 24})
    assert not reused and other != artifact and changed["window"] == 24


def test_registering_the_same_file_twice_is_byte_identical(tmp_path):
    path = _series_csv(tmp_path / "load.csv")
    _, a, _ = register("one", "timeseries", path, {"target": "load", "time_column": "time"}, tmp_path / "a")
    _, b, _ = register("one", "timeseries", path, {"target": "load", "time_column": "time"}, tmp_path / "b")
    assert a["content_hash"] == b["content_hash"]


# ---------------------------------------------------------------- bad input, one clear message

def test_an_empty_file_is_named(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert "empty.csv: the file is empty" in _error(tmp_path, "x", "timeseries", tmp_path / "empty.csv",
                                                    target="load")
    (tmp_path / "empty.txt").write_bytes(b"")
    assert "empty.txt: the file is empty" in _error(tmp_path, "x", "text", tmp_path / "empty.txt")


def test_a_missing_or_misnamed_column_lists_the_columns_there_are(tmp_path):
    path = _series_csv(tmp_path / "load.csv")
    msg = _error(tmp_path, "x", "timeseries", path, target="lod", time_column="time")
    assert "missing column(s) ['lod']" in msg and "'load'" in msg and "'temp'" in msg
    reviews = _reviews(tmp_path / "r.csv")
    msg = _error(tmp_path, "x", "text", reviews, text_column="review")
    assert "missing column(s) ['label']" in msg and "'sentiment'" in msg


def test_nan_or_inf_is_an_error_unless_interpolation_is_asked_for(tmp_path):
    path = _series_csv(tmp_path / "load.csv", bad={(10, "load"): "", (20, "temp"): "inf"})
    msg = _error(tmp_path, "x", "timeseries", path, target="load", time_column="time")
    assert "2 missing, NaN or infinite value(s), first at row 12, column 'load'" in msg
    assert "--on-missing interpolate" in msg
    artifact, manifest, _ = register("x", "timeseries", path, {"target": "load", "time_column": "time",
                                     "on_missing": "interpolate"}, tmp_path / "data")
    assert manifest["warnings"] == ["2 missing, NaN or infinite value(s) filled by linear interpolation"]
    assert all(np.isfinite(s).all() for s in load_split(artifact, "train").x)


def test_a_date_column_not_named_as_time_gets_a_hint(tmp_path):
    path = _series_csv(tmp_path / "load.csv")
    assert "'time': '2024-01-01 00:00:00' is not a number; it holds dates: pass --time-column time" \
        in _error(tmp_path, "x", "timeseries", path, target="load")


def test_a_non_numeric_value_is_named_by_row_and_column(tmp_path):
    path = _series_csv(tmp_path / "load.csv", bad={(7, "temp"): "n/a?"})
    assert "row 9, column 'temp': 'n/a?' is not a number" in _error(
        tmp_path, "x", "timeseries", path, target="load", time_column="time")


def test_a_single_class_is_refused(tmp_path):
    path = _reviews(tmp_path / "r.csv", labels=["pos"] * 20)
    assert "a single class ('pos')" in _error(tmp_path, "x", "text", path, text_column="review",
                                              label_column="sentiment")


def test_a_class_with_fewer_than_two_examples_is_named(tmp_path):
    path = _reviews(tmp_path / "r.csv", labels=["pos", "neg"] * 10 + ["meh"])
    assert "fewer than 2 examples: 'meh' (1)" in _error(
        tmp_path, "x", "text", path, text_column="review", label_column="sentiment")


def test_corrupt_and_zero_length_audio_are_named(tmp_path):
    root = _clips(tmp_path / "clips")
    (root / "low" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage that is not audio")
    assert "broken.wav: cannot decode audio" in _error(tmp_path, "x", "audio", root)
    (root / "low" / "broken.wav").unlink()
    sf.write(root / "high" / "silent.wav", np.zeros(0), 16000)
    assert "silent.wav: zero-length audio" in _error(tmp_path, "x", "audio", root)
    (root / "high" / "silent.wav").write_bytes(b"")
    assert "silent.wav: cannot decode audio" in _error(tmp_path, "x", "audio", root)


def test_non_utf8_text_names_the_line_and_latin1_can_be_asked_for(tmp_path):
    labels = ["pos", "neg"] * 10
    frame = pd.DataFrame({"text": [f"café au lait {i}, très bien" for i in range(20)], "label": labels})
    frame.to_csv(tmp_path / "r.csv", index=False, encoding="latin-1")
    msg = _error(tmp_path, "x", "text", tmp_path / "r.csv")
    assert "r.csv:2: byte 0xe9" in msg and "not valid utf-8" in msg and "--encoding" in msg
    _, m, _ = register("x", "text", tmp_path / "r.csv", {"encoding": "latin-1"}, tmp_path / "data")
    assert m["num_classes"] == 2


def test_too_long_sequences_are_truncated_with_a_warning_or_refused(tmp_path):
    path = _reviews(tmp_path / "r.csv", long_row=3)
    opts = {"text_column": "review", "label_column": "sentiment", "max_len": 50}
    msg = _error(tmp_path, "x", "text", path, on_long="error", **opts)
    assert "row 5: length 500 exceeds --max-len 50" in msg
    artifact, m, _ = register("x", "text", path, opts, tmp_path / "data")
    assert m["warnings"] == ["1 example(s) longer than 50 were truncated (first: "
                             f"{path}: row 5)"]
    assert m["splits"]["train"]["length_max"] <= 50


def test_a_horizon_longer_than_the_series_allows_is_refused(tmp_path):
    path = _series_csv(tmp_path / "load.csv", n=200)
    msg = _error(tmp_path, "x", "timeseries", path, target="load", time_column="time", horizon=60)
    assert "cannot hold window=48 plus horizon=60" in msg
    assert "use a horizon of at most 29 and a window of at most 79" in msg


def test_an_option_of_another_kind_is_refused_before_reading_anything(tmp_path):
    path = _reviews(tmp_path / "r.csv")
    msg = _error(tmp_path, "x", "text", path, target="load")
    assert "--target does not apply to --kind text" in msg and "--label-column" in msg


def test_a_failed_registration_keeps_the_last_good_artifact(tmp_path):
    path = _series_csv(tmp_path / "load.csv")
    good, first, _ = register("load", "timeseries", path, {"target": "load", "time_column": "time"}, tmp_path / "data")
    before = json.loads((tmp_path / "data" / "registry.json").read_text())
    _series_csv(path, bad={(5, "load"): "oops"})  # the user's file breaks in place
    assert "'oops' is not a number" in _error(tmp_path, "load", "timeseries", path, target="load", time_column="time")
    assert load_registry(tmp_path / "data") == before
    again, manifest, reused = prepare("load", tmp_path / "data")
    assert reused and again == good and manifest["content_hash"] == first["content_hash"]
    assert len(load_split(again, "train").x) == first["splits"]["train"]["n"]


def test_a_bad_dataset_name_or_a_built_in_name_is_refused(tmp_path):
    path = _series_csv(tmp_path / "load.csv")
    assert "dataset name 'My Data'" in _error(tmp_path, "My Data", "timeseries", path, target="load", time_column="time")
    assert "'sunspots' is a built-in dataset" in _error(tmp_path, "sunspots", "timeseries", path,
                                                        target="load")


def test_texts_equal_after_unicode_normalisation_are_one_group_and_others_are_not():
    from datamodules.splits import duplicate_keys

    same = ["The ﬁlm is GREAT!", "the film is great", "Ｔｈｅ　ｆｉｌｍ\tis great…",
            "the\u00a0film is\u200b great."]  # ligature, full width, no-break and zero-width space
    apart = ["Straße ohne Ende", "STRASSE OHNE ENDE", "résumé", "resume", "Фильм хороший",
             "Фильм плохой", "映画は良い", "映画は悪い"]
    keys = duplicate_keys(same + apart)
    assert len(set(keys[:4])) == 1 and keys[4] == keys[5]  # casefolding: ß is ss
    assert len({keys[0], *keys[6:]}) == 1 + 6  # accents and other scripts are kept apart


def test_exact_and_normalised_duplicates_of_a_users_file_never_cross_splits(tmp_path):
    spellings = (lambda w: f"{w} is a fine film",  # an exact copy, upper case, full width + ligature
                 lambda w: f"{w.upper()} IS A FINE FILM!", lambda w: f"  {w}  ｉｓ a ﬁne\tfilm. ")
    cyrillic = "абвгдежзийклмнопрстуфхцчшщъыьэюя"
    rows, source = [], []
    for i in range(60):  # 60 texts, Latin and Cyrillic (differing in letters only), 1-3 copies each
        word = f"film{i}" if i % 2 else "фильм" + cyrillic[i % 32] + cyrillic[i // 32]
        for j in range(1 + i % 3):
            rows.append({"text": spellings[j if i % 5 else 0](word), "label": "pos" if i % 2 else "neg"})
            source.append(i)
    pd.DataFrame(rows).to_csv(tmp_path / "dups.csv", index=False)
    artifact, manifest, _ = register("udups", "text", tmp_path / "dups.csv", {}, tmp_path / "data")
    assert (manifest["duplicate_groups"], manifest["duplicate_rows"]) == (40, 100)
    where: dict[int, set[str]] = {}
    for split in ("train", "val", "test"):
        for row in load_split(artifact, split).ids:
            where.setdefault(source[int(row)], set()).add(split)
    assert len(where) == 60 and all(len(splits) == 1 for splits in where.values())


def test_duplicate_texts_of_a_users_file_stay_in_one_split(tmp_path):
    rows = [{"text": f"Review number {i % 40}{'!' if i % 3 else '.'}", "label": "pos" if i % 2 else "neg"}
            for i in range(200)]  # 40 distinct texts once case and punctuation are set aside
    pd.DataFrame(rows).to_csv(tmp_path / "dups.csv", index=False)
    artifact, manifest, _ = register("dups", "text", tmp_path / "dups.csv", {}, tmp_path / "data")
    assert manifest["duplicate_groups"] == 40 and manifest["duplicate_rows"] == 200
    texts = {split: {rows[i]["text"].rstrip("!.") for i in load_split(artifact, split).ids}
             for split in ("train", "val", "test")}
    assert not (texts["train"] & texts["val"]) and not (texts["train"] & texts["test"])
    assert not (texts["val"] & texts["test"])
