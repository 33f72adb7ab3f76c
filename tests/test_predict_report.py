"""``rnnbench predict`` reads each input format as the served model expects it and refuses the
wrong one in one line; ``rnnbench report --compare`` gives B - A with a Welch interval where
both runs carry seed repeats. Constructed inputs and runs: nothing is trained here (the flow
end to end, with a real sweep, is in test_benchmark_flow.py)."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows import predict, report, stats

SEQUENCE_SPEC = {"data": {"input_dim": 3, "vocab_size": 0}}


def test_the_interval_of_a_difference_is_welchs_by_hand():
    # means 2 and 3, sd 1 each, n 3: se √(1/3 + 1/3) = 0.8165, df 4, t(0.975, 4) = 2.7764
    diff, half = stats.difference([1, 2, 3], [2, 3, 4])
    assert diff == pytest.approx(1.0)
    assert half == pytest.approx(2.776445 * 0.816497, abs=1e-5)
    assert stats.difference([1, 1], [2, 2]) == (1.0, 0.0)


def test_a_csv_window_has_a_column_per_channel_and_a_sequence_column_holds_json(tmp_path):
    window = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    pd.DataFrame(window, columns=["a", "b", "c"]).to_csv(tmp_path / "w.csv", index=False)
    frame = predict.read(tmp_path / "w.csv", "csv", SEQUENCE_SPEC)
    assert frame["sequence"].tolist() == [window]
    pd.DataFrame({"sequence": ["[[1, 2, 3]]", "[[4, 5, 6], [7, 8, 9]]"]}).to_csv(tmp_path / "s.csv", index=False)
    assert predict.read(tmp_path / "s.csv", "csv", SEQUENCE_SPEC)["sequence"].tolist() == [
        [[1, 2, 3]], [[4, 5, 6], [7, 8, 9]]]


@pytest.mark.parametrize("name,content,spec,message", [
    ("w.csv", "a,b\n1,2\n", SEQUENCE_SPEC, "input 1 has 2 value(s) per step; this model reads 3 per step"),
    ("w.csv", "a,b,c\n1,x,2\n", SEQUENCE_SPEC, "every column but series and time must hold numbers"),
    ("t.txt", "hello\n", SEQUENCE_SPEC, "this model reads sequences of 3 value(s) per step"),
    ("s.jsonl", '{"sequence": [[1, 2, 3]]}\n{oops\n', SEQUENCE_SPEC, "line 2 is not JSON"),
    ("t.csv", "words\nhi\n", {"tokenizer": {"level": "char"}, "data": {}}, "no 'text' column (columns: words)"),
    ("a.jsonl", "[1, 2]\n", {"tokenizer": {"level": "char"}, "data": {}}, "line 1 must be a JSON object"),
])
def test_the_wrong_format_is_refused_in_one_line_saying_what_the_model_reads(tmp_path, name, content, spec, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(predict.PredictError) as caught:
        predict.read(path, predict.input_format(path), spec)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_extensions_and_missing_files_are_refused_before_any_model_is_loaded(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(predict.PredictError, match=r"unknown input format '.parquet'; valid: .txt, .csv, .jsonl"):
        predict.input_format(tmp_path / "x.parquet")
    with pytest.raises(predict.PredictError, match="no such file"):
        predict.input_format(tmp_path / "x.csv")


def test_an_audio_clip_goes_to_a_model_trained_on_audio_and_to_no_other(tmp_path):
    (tmp_path / "tone.wav").write_bytes(b"RIFF")  # read by the model (test_serving), not here
    spec = {"featurizer": {"sample_rate": 8000, "features": "mfcc", "n_mels": 20, "n_mfcc": 8},
            "data": {"input_dim": 8, "vocab_size": 0}}
    frame = predict.read(tmp_path / "tone.wav", predict.input_format(tmp_path / "tone.wav"), spec)
    assert frame["audio"].tolist() == [str((tmp_path / "tone.wav").resolve())]
    with pytest.raises(predict.PredictError, match="this model reads sequences"):  # audio to a series model
        predict.read(tmp_path / "tone.wav", "audio", SEQUENCE_SPEC)


def _benchmark(client: MlflowClient, exp: str, scores: dict[str, list[float]]) -> str:
    """A benchmark run with one classification sweep per variant holding per-seed scores."""
    bench = client.create_run(exp, tags={"rnnbench.role": "benchmark"}).info.run_id
    client.log_metric(bench, "baseline/toy/val/acc", 0.1)
    client.log_metric(bench, "baseline/toy/test/acc", 0.1)
    for variant, accs in scores.items():
        run = client.create_run(exp, tags={"rnnbench.role": "sweep", "dataset": "toy", "variant": variant,
                                           "rnnbench.task": "classification", "modality": "speech",
                                           "mlflow.parentRunId": bench}).info.run_id
        client.log_metric(run, "val/acc", max(accs))
        client.log_metric(run, "test/acc", max(accs))
        for seed, acc in enumerate(accs):
            for stage in ("val", "test"):
                client.log_metric(run, stats.seed_metric_name(stage, "acc", seed), acc)
        client.set_terminated(run)
    client.set_terminated(bench)
    return bench


def test_compare_gives_the_difference_with_its_welch_interval_when_both_runs_have_seeds(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("toy", (tmp_path / "artifacts").as_uri())
    a = _benchmark(client, exp, {"lstm": [0.80, 0.82, 0.84], "gru": [0.70, 0.71, 0.72]})
    b = _benchmark(client, exp, {"lstm": [0.85, 0.86, 0.87], "gru": [0.70, 0.71, 0.72]})
    board = report.compare(uri, a, b)["toy"]
    row = board[(board["variant"] == "lstm") & (board["metric"] == "val/acc")].iloc[0]
    diff, half = stats.difference([0.80, 0.82, 0.84], [0.85, 0.86, 0.87])
    assert (row["A"], row["B"]) == (pytest.approx(0.82), pytest.approx(0.86))  # the seed means
    assert row[report.DELTA] == pytest.approx(diff) and row[report.DELTA + " ±95%"] == pytest.approx(half)
    assert any("Welch interval" in line for line in board.attrs["headlines"])
    base = board[board["variant"] == "(baseline)"].iloc[0]
    assert base[report.DELTA] == 0 and pd.isna(base[report.DELTA + " ±95%"])  # no seeds: plain
    sweep = client.search_runs([exp], "tags.variant = 'gru'")[0].info.run_id
    with pytest.raises(report.ReportError, match=f"run {sweep} is not a benchmark run"):
        report.compare(uri, a, sweep)
