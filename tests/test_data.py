"""Preparation is deterministic, reused, leak-free, and refuses bad input clearly."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from datamodules.artifact import load_split, read_extra
from datamodules.catalog import artifact_location, get_dataset, prepare
from datamodules.datamodule import SequenceDataModule, collate
from datamodules.errors import DataError
from datamodules.loaders import read_series, read_ts


def baseline_scores(artifact) -> dict[str, float]:
    """The dataset's trivial baseline, scored the way the benchmark scores it."""
    from flows.training import PreparedData, score_baseline
    from modules.tasks import TASKS

    data = PreparedData.load(artifact)
    return score_baseline(TASKS[data.manifest["task"]], data)


def test_built_in_datasets_have_the_published_shapes(prepared):
    jv = prepared["japanese-vowels"][1]
    assert jv["num_classes"] == 9 and jv["input_dim"] == 12
    assert jv["splits"]["train"]["n"] + jv["splits"]["val"]["n"] == 270
    assert jv["splits"]["test"]["n"] == 370
    assert 7 <= jv["splits"]["test"]["length_min"] and jv["splits"]["test"]["length_max"] <= 29
    rt = prepared["rotten-tomatoes"][1]
    assert sum(rt["splits"][s]["n"] for s in ("train", "val", "test")) == 7403 + 5405
    ss = prepared["sunspots"][1]
    assert ss["horizon"] == 12 and ss["task"] == "forecasting" and ss["season"] == 1
    el = prepared["electricity"][1]
    assert el["horizon"] == 48 and el["season"] == 48 and el["window"] == 96
    mn = prepared["seq-mnist"][1]
    assert mn["input_dim"] == 28 and mn["num_classes"] == 10
    assert sum(mn["splits"][s]["n"] for s in ("train", "val", "test")) == 5000
    assert mn["splits"]["train"]["length_min"] == mn["splits"]["train"]["length_max"] == 28
    assert prepared["adding"][1]["splits"]["test"]["length_max"] == 200


def test_preparation_is_deterministic_and_a_second_run_reuses_the_artifact(tmp_path, prepared):
    first_dir, first = prepared["japanese-vowels"]
    again_dir, again, reused = prepare("japanese-vowels", tmp_path)
    assert not reused and again["content_hash"] == first["content_hash"]
    for f in sorted(p.name for p in first_dir.iterdir()):
        assert (first_dir / f).read_bytes() == (again_dir / f).read_bytes(), f
    _, _, reused = prepare("japanese-vowels", tmp_path)
    assert reused


def test_changed_parameters_give_a_new_artifact(tmp_path):
    a, _ = artifact_location("sunspots", tmp_path)
    b, _ = artifact_location("sunspots", tmp_path, {"window": 60})
    assert a != b


def test_vocabulary_is_built_from_training_split_only(tmp_path):
    params = {"max_len": 10_000, "min_freq": 2}  # no truncation: every token is counted
    artifact, manifest, _ = prepare("rotten-tomatoes", tmp_path, params)
    vocab = read_extra(artifact, "vocab")
    train_counts = np.bincount(np.concatenate(load_split(artifact, "train").x), minlength=len(vocab))
    # every real word in the vocabulary occurs at least min_freq times in the training split
    assert (train_counts[2:] >= 2).all()
    test_ids = np.concatenate(load_split(artifact, "test").x)
    assert (test_ids == 1).any(), "test words unseen in training must map to <unk>"


def test_scalers_are_fit_on_training_data_only(prepared):
    artifact, manifest = prepared["sunspots"]
    raw = read_series(_sunspots_file())
    train_end = int(len(raw) * (1 - 0.15 - 0.15))
    scaler = read_extra(artifact, "scaler")
    assert scaler["mean"][0] == pytest.approx(raw[:train_end].mean())
    assert scaler["std"][0] == pytest.approx(raw[:train_end].std())
    jv_dir, _ = prepared["japanese-vowels"]
    train = np.concatenate(load_split(jv_dir, "train").x)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-3)


def _sunspots_file():
    from datamodules.specs import VENDORED

    return VENDORED / "sunspots" / "sunspots.txt.gz"


def test_splits_do_not_overlap_and_series_split_is_chronological(prepared):
    for name in ("japanese-vowels", "rotten-tomatoes", "seq-mnist"):
        artifact, _ = prepared[name]
        ids = {s: set(load_split(artifact, s).ids.tolist()) for s in ("train", "val", "test")}
        assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    for name in ("sunspots", "electricity"):
        artifact, manifest = prepared[name]
        starts = {s: load_split(artifact, s).ids for s in ("train", "val", "test")}
        horizon = manifest["horizon"]
        assert starts["train"].max() + horizon <= starts["val"].min()
        assert starts["val"].max() + horizon <= starts["test"].min()


def test_text_split_is_stratified(prepared):
    _, manifest = prepared["rotten-tomatoes"]
    shares = [c[1] / sum(c) for c in (manifest["splits"][s]["class_counts"] for s in ("train", "val", "test"))]
    assert max(shares) - min(shares) < 0.01


def test_baselines_are_the_majority_class_and_the_last_or_seasonal_value(prepared):
    rt = baseline_scores(prepared["rotten-tomatoes"][0])
    assert rt["test/acc"] == pytest.approx(741 / 1281, abs=0.01)
    ss = baseline_scores(prepared["sunspots"][0])
    assert ss["test/rel_mae"] == 1.0 and 10 < ss["test/mae"] < 60
    # a day-ahead demand forecast that repeats yesterday is far better than repeating the last
    # half hour: the seasonal naive is the baseline to beat
    artifact, manifest = prepared["electricity"]
    seasonal = baseline_scores(artifact)["test/mae"]
    test = load_split(artifact, "test")
    std = read_extra(artifact, "scaler")["std"][0]
    last_value = float(np.mean([np.abs(s[-1, 0] - y) for s, y in zip(test.x, test.y)]) * std)
    assert seasonal < 0.5 * last_value


def test_seq_mnist_rows_are_time_steps_scaled_to_unit_range(prepared):
    artifact, _ = prepared["seq-mnist"]
    first = load_split(artifact, "train").x[0]
    assert first.shape == (28, 28) and 0.0 <= first.min() and first.max() <= 1.0 and first.max() > 0.5


def test_datamodule_pads_each_batch_to_its_own_longest_sequence(prepared):
    artifact, _ = prepared["japanese-vowels"]
    dm = SequenceDataModule(artifact, batch_size=4)
    dm.setup("fit")
    x, lengths, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, int(lengths.max()), 12) and y.shape == (4,)
    assert (x[lengths.argmin(), int(lengths.min()):] == 0).all()


def test_collate_keeps_token_ids_as_integers():
    import torch

    x, lengths, _ = collate([(torch.tensor([3, 4, 5]), torch.tensor(1)), (torch.tensor([6]), torch.tensor(0))])
    assert x.dtype == torch.int64 and x.tolist() == [[3, 4, 5], [6, 0, 0]] and lengths.tolist() == [3, 1]


@pytest.mark.parametrize("ragged", [True, False])
def test_batches_fetched_whole_equal_those_collated_sample_by_sample(ragged):
    """The DataLoader takes a batch from ``SequenceDataset.__getitems__`` in one call; it must
    be exactly what collating the samples one by one gives, for ragged and fixed lengths."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from datamodules.datamodule import SequenceDataset

    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 9, 21) if ragged else np.full(21, 6)
    ds = SequenceDataset([rng.standard_normal((n, 3)).astype(np.float32) for n in lengths],
                         rng.integers(0, 4, 21))
    order = [b.tolist() for b in torch.randperm(21, generator=torch.Generator().manual_seed(0)).split(4)]
    batches = list(DataLoader(ds, batch_sampler=order, collate_fn=collate))
    assert len(batches) == len(order) == 6
    for indices, batch in zip(order, batches):
        expected = collate([ds[i] for i in indices])
        assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(batch, expected))


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(DataError, match="unknown dataset 'mnist'; valid: japanese-vowels, rotten-tomatoes, sunspots, electricity, seq-mnist, adding, copy-memory, spoken-digits, shakespeare-char"):
        get_dataset("mnist")


def test_missing_data_directory_is_named(tmp_path):
    with pytest.raises(DataError, match="data directory not found: .*nowhere"):
        prepare("sunspots", tmp_path, source_dir=tmp_path / "nowhere")


def test_non_positive_dataset_parameter_is_refused_before_work(tmp_path):
    with pytest.raises(DataError, match="horizon must be positive, got 0"):
        prepare("sunspots", tmp_path, {"horizon": 0})
    assert not any(tmp_path.iterdir())


def test_malformed_ts_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.ts"
    bad.write_text("@problemName x\n@data\n1.0,2.0:3.0,4.0:1\n1.0,abc:3.0,4.0:2\n")
    with pytest.raises(DataError, match=r"bad\.ts:4: non-numeric value"):
        read_ts(bad)


def test_a_user_copy_of_the_raw_files_prepares_like_the_vendored_one(tmp_path, prepared):
    from datamodules.specs import VENDORED

    source = tmp_path / "mine"
    source.mkdir()
    with gzip.open(VENDORED / "sunspots" / "sunspots.txt.gz", "rb") as fh:
        data = fh.read()
    (source / "sunspots.txt.gz").write_bytes(gzip.compress(data, compresslevel=1))  # other bytes
    _, manifest, _ = prepare("sunspots", tmp_path / "out", source_dir=source)
    assert manifest["content_hash"] == prepared["sunspots"][1]["content_hash"]


def test_an_interrupted_write_leaves_no_artifact_a_later_run_would_use(tmp_path, monkeypatch):
    import datamodules.artifact as artifact_mod

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifact_mod.np, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare("sunspots", tmp_path)
    assert not list((tmp_path / "sunspots").iterdir())
    monkeypatch.undo()
    _, manifest, reused = prepare("sunspots", tmp_path)
    assert not reused and json.dumps(manifest)


def test_adding_problem_marks_one_value_in_each_half_and_targets_their_sum(prepared):
    artifact, manifest = prepared["adding"]
    assert manifest["task"] == "regression" and manifest["splits"]["train"]["n"] == 5000
    train = load_split(artifact, "train")
    x, y = np.stack(train.x[:50]), train.y[:50, 0]
    half = x.shape[1] // 2
    assert (x[:, :half, 1].sum(axis=1) == 1).all() and (x[:, half:, 1].sum(axis=1) == 1).all()
    np.testing.assert_allclose((x[..., 0] * x[..., 1]).sum(axis=1), y, rtol=1e-6)
    # the trivial "predict the mean" baseline matches the published ~0.167 MSE
    assert baseline_scores(artifact)["test/mse"] == pytest.approx(1 / 6, abs=0.02)


def test_generated_datasets_are_reproducible_from_their_seed(tmp_path, prepared):
    _, again, _ = prepare("adding", tmp_path)
    assert again["content_hash"] == prepared["adding"][1]["content_hash"]
    _, other, _ = prepare("adding", tmp_path, {"seed": 18})
    assert other["content_hash"] != again["content_hash"]


def test_copy_memory_asks_to_recall_ten_digits_after_the_blanks(prepared):
    artifact, manifest = prepared["copy-memory"]
    train = load_split(artifact, "train")
    x, y = np.stack(train.x[:20]), train.y[:20]
    length = 200
    assert x.shape == (20, length + 20) and y.shape == (20, length + 20)
    assert ((x[:, :10] >= 1) & (x[:, :10] <= 8)).all()
    assert (x[:, 10: length + 9] == 0).all() and (x[:, length + 9:] == 9).all()
    assert (y[:, : length + 10] == 0).all() and (y[:, length + 10:] == x[:, :10]).all()
    # the memoryless baseline of the paper: 10 log 8 / (T + 20), here in bits
    # (per-position frequencies of the training targets, add-one smoothed: a little above it)
    assert baseline_scores(artifact)["test/bpc"] == pytest.approx(30 / (length + 20), rel=0.05)


def test_character_model_targets_are_the_inputs_shifted_by_one(prepared):
    artifact, manifest = prepared["shakespeare-char"]
    train = load_split(artifact, "train")
    for x, y in zip(train.x[:10], train.y[:10]):
        assert (x[1:] == y[:-1]).all()
    vocab = read_extra(artifact, "vocab")
    assert vocab[:2] == ["<pad>", "<unk>"] and " " in vocab and "e" in vocab
    seen = np.unique(np.concatenate(train.x + [train.y.ravel()]))
    assert set(range(2, len(vocab))) <= set(seen.tolist()), "every vocabulary character occurs in training"
    starts = {s: load_split(artifact, s).ids for s in ("train", "val", "test")}
    assert starts["train"].max() < starts["val"].min() and starts["val"].max() < starts["test"].min()
    assert 4.0 < baseline_scores(artifact)["test/bpc"] < 5.5  # unigram entropy of English text


def test_bidirectional_variants_are_left_out_of_language_modelling_with_the_reason(tmp_path):
    from flows.plan import PlanError, make_plan
    from flows.settings import load_settings

    settings = load_settings(home=tmp_path)
    plan = make_plan(settings, "quick", None, ["shakespeare-char", "sunspots"], ["lstm", "bigru"])
    assert [(p.dataset, p.variant) for p in plan.pairs] == [
        ("shakespeare-char", "lstm"), ("sunspots", "lstm"), ("sunspots", "bigru")]
    assert plan.skipped == ["shakespeare-char · bigru skipped: bigru reads sequences in both directions, "
                            "so on a language-model dataset it would see the tokens it must predict"]
    with pytest.raises(PlanError, match="no selected variant can train on 'shakespeare-char'"):
        make_plan(settings, "quick", None, ["shakespeare-char"], ["bilstm"])


def test_raw_text_encoded_from_the_stored_tokenizer_gives_the_prepared_ids(prepared):
    import bz2

    from datamodules.loaders import read_labelled_text
    from datamodules.specs import VENDORED
    from datamodules.text import Tokenizer

    artifact, _ = prepared["rotten-tomatoes"]
    tokenizer = Tokenizer(read_extra(artifact, "tokenizer"), read_extra(artifact, "vocab"))
    raw = read_labelled_text(VENDORED / "rotten_tomatoes" / "rotten_tomatoes_corpus_full.csv.bz2",
                             "text", "category")
    test = load_split(artifact, "test")
    for row, ids in zip(test.ids[:200], test.x[:200]):
        assert tokenizer(raw.loc[row, "text"]).tolist() == ids.tolist()
    assert tokenizer("").tolist() == [1] and len(tokenizer("word " * 500)) == 48
    artifact, manifest = prepared["shakespeare-char"]
    chars = Tokenizer(read_extra(artifact, "tokenizer"), read_extra(artifact, "vocab"))
    text = bz2.decompress((VENDORED / "shakespeare" / "shakespeare_plays.txt.bz2").read_bytes()).decode()
    val = load_split(artifact, "val")
    for start, ids in zip(val.ids[:20], val.x[:20]):
        assert chars(text[start: start + manifest["params"]["seq_len"]]).tolist() == ids.tolist()


def test_raw_input_scaled_with_the_stored_scaler_gives_the_prepared_values(prepared):
    from datamodules import scaling
    from datamodules.specs import VENDORED

    artifact, _ = prepared["japanese-vowels"]
    raw, _ = read_ts(VENDORED / "japanese_vowels" / "JapaneseVowels_TRAIN.ts.gz")
    scaler, train = read_extra(artifact, "scaler"), load_split(artifact, "train")
    for row, x in zip(train.ids[:20], train.x[:20]):
        assert np.array_equal(scaling.apply(raw[row], scaler), x)
    artifact, manifest = prepared["sunspots"]
    raw, window = read_series(_sunspots_file())[:, None], manifest["window"]
    scaler, test = read_extra(artifact, "scaler"), load_split(artifact, "test")
    for start, x in zip(test.ids[:20], test.x[:20]):
        assert np.array_equal(scaling.apply(raw[start - window: start], scaler), x)
    np.testing.assert_allclose(scaling.invert(test.y[0], scaler, 0),
                               raw[test.ids[0]: test.ids[0] + manifest["horizon"], 0], rtol=1e-5)


def test_a_dataset_registered_at_run_time_prepares_by_name_and_a_taken_name_is_refused(tmp_path):
    from datamodules.artifact import Prepared, Split
    from datamodules.builtin import DATASETS
    from datamodules.catalog import register_dataset
    from datamodules.specs import DatasetSpec

    def build(files, p):
        def split(n):
            return Split([np.ones((3, 1), np.float32)] * n, np.zeros((n, 1), np.float32), np.arange(n))
        return Prepared({"train": split(p["n"]), "val": split(2), "test": split(2)},
                        {"outputs": 1, "input_dim": 1, "vocab_size": 0})

    toy = DatasetSpec(name="toy-ones", modality="synthetic", task="regression",
                      description="ones", folder="", files=(), build=build, defaults={"n": 4})
    try:
        register_dataset(toy)
        _, manifest, _ = prepare("toy-ones", tmp_path)
        assert manifest["splits"]["train"]["n"] == 4 and get_dataset("toy-ones") is toy
        with pytest.raises(DataError, match="dataset 'toy-ones' is already defined"):
            register_dataset(toy)
    finally:
        DATASETS.pop("toy-ones", None)
    with pytest.raises(DataError, match="dataset 'sunspots' is already defined"):
        register_dataset(DATASETS["sunspots"])


def test_the_catalog_imports_no_training_audio_or_sklearn_libraries():
    import subprocess
    import sys

    heavy = ("sklearn", "torch", "ray", "mlflow", "librosa")
    code = ("import sys, datamodules.catalog; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "[]"


def test_mase_is_scaled_by_the_in_sample_naive_mae_of_the_training_part():
    # Hyndman & Koehler: MAE / mean |y_t - y_{t-m}| over the training part, in the data's units
    from datamodules.series import series_splits
    from flows.training import PreparedData, evaluate, score_baseline
    from modules.tasks import TASKS

    values = np.array([0, 2, 1, 3, 2, 4, 3, 5, 4, 6, 5, 7, 6, 8, 7, 9, 8, 10, 9, 11.0] * 3)  # a wrap every 20
    p = {"window": 4, "horizon": 2, "season": 2, "val_fraction": 0.2, "test_fraction": 0.2}
    prepared = series_splits("hand", values, p)
    train = values[: int(len(values) * 0.6)]
    scale = np.abs(train[2:] - train[:-2]).mean()  # the lag-2 naive forecast's in-sample MAE
    assert prepared.meta["mase_scale"] == pytest.approx(scale) and scale > 0
    data = PreparedData({**prepared.meta, "task": "forecasting"}, prepared.extras, prepared.splits)
    scores = score_baseline(TASKS["forecasting"], data)
    # the seasonal naive forecast on the test windows, scaled by the in-sample naive MAE
    assert scores["test/mase"] == pytest.approx(scores["test/mae"] / scale, rel=1e-5)
    assert scores["test/rel_mae"] == pytest.approx(1.0)


def test_duplicate_snippets_never_sit_on_both_sides_of_a_split(prepared):
    from datamodules.loaders import read_labelled_text
    from datamodules.specs import VENDORED
    from datamodules.splits import duplicate_keys

    artifact, manifest = prepared["rotten-tomatoes"]
    raw = read_labelled_text(VENDORED / "rotten_tomatoes" / "rotten_tomatoes_corpus_full.csv.bz2",
                             "text", "category")
    keys = dict(zip(raw.index, duplicate_keys(raw["text"].astype(str).tolist())))
    where = {}
    for split in ("train", "val", "test"):
        for row in load_split(artifact, split).ids:
            where.setdefault(keys[row], set()).add(split)
    assert all(len(splits) == 1 for splits in where.values())
    # 55 groups of exact copies (111 rows) and 3 more pairs equal up to case and punctuation
    assert (manifest["duplicate_groups"], manifest["duplicate_rows"]) == (58, 117)
    assert manifest["duplicate_rule"].startswith("equal after Unicode NFKC")
