"""The transcription task without espeak-ng: CTC decoding (greedy against beam search) on
constructed posteriors, the digit error rate and whole-string accuracy on known edit
distances, the trivial baseline's transcript, padding that never changes a transcript, and
the plan refusing a front end too strided for CTC and skipping the mlp; the attention
decoder's token loss, its transcripts read up to its end token, and it learning four
transcripts exactly.
(tests/integration/test_transcription.py trains every variant on synthesized speech.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modules import tasks
from modules.ctc import beam_decode, ctc_loss, decode, greedy_decode
from modules.variants import BUILTIN, VARIANTS

TASK = tasks.get("transcription")
DATA = {"task": "transcription", "num_classes": 10, "input_dim": 4, "vocab_size": 0, "frames_per_label": 12,
        "max_label_length": 5}


def posterior(*frames: dict[int, float], classes: int = 3) -> torch.Tensor:
    """(1, T, classes) log-probabilities; each frame's unnamed classes share what is left."""
    rows = []
    for frame in frames:
        rest = (1.0 - sum(frame.values())) / max(classes - len(frame), 1)
        rows.append([math.log(frame.get(c, rest)) if frame.get(c, rest) > 0 else -1e4 for c in range(classes)])
    return torch.tensor([rows])


def test_beam_search_finds_the_label_that_no_single_path_wins():
    # label a (0) or blank (1) on two frames: the best path is blank-blank (0.36), yet "a" is
    # read from three paths (a-a, a-blank, blank-a: 0.16 + 0.24 + 0.24 = 0.64)
    lp = posterior({0: 0.4, 1: 0.6}, {0: 0.4, 1: 0.6}, classes=2)
    assert greedy_decode(lp) == [[]]
    assert beam_decode(lp, 2) == [[0]] and decode(lp, 4) == [[0]] and decode(lp, 1) == [[]]
    # and its probability is what CTC's loss says: -log 0.64 for the label "a"
    assert ctc_loss(lp, torch.tensor([[0]])).item() == pytest.approx(-math.log(0.64), abs=1e-5)


def test_decoding_merges_repeats_unless_a_blank_separates_them():
    blank = 2
    lp = posterior({0: 0.9}, {0: 0.9}, {blank: 0.9}, {0: 0.9}, {1: 0.9}, {1: 0.9})
    assert greedy_decode(lp) == [[0, 0, 1]] == beam_decode(lp, 3)


def test_digit_error_rate_is_edit_distance_over_reference_length_and_string_accuracy_exact_matches():
    metrics = TASK.metrics(DATA)
    # refs 3141 and 27 (6 digits); hyps 341 (one deletion), 2 (one deletion), then 99 vs 27
    # (two substitutions) and an exact 555
    metrics.update(["341", "2"], ["3141", "27"])
    metrics.update(["99", "555"], ["27", "555"])
    scores = {k: float(v) for k, v in metrics.compute().items()}
    assert scores["der"] == pytest.approx((1 + 1 + 2 + 0) / (4 + 2 + 2 + 3))
    assert scores["string_acc"] == pytest.approx(1 / 4)


def test_the_metrics_read_transcripts_off_the_networks_frames():
    # frames that read "31" and "4", labels 31 and 44 padded with -1: one of three digits wrong
    classes = 11
    frames = torch.full((2, 4, classes), -1e4)
    for row, path in enumerate(([3, 10, 1, 10], [4, 10, 10, 10])):
        frames[row, torch.arange(4), torch.tensor(path)] = 0.0
    y = torch.tensor([[3, 1, -1], [4, 4, -1]])
    metrics = TASK.metrics(DATA)
    args, kwargs = TASK.metric_inputs(frames, (None, torch.tensor([4, 4]), y), DATA)
    assert args == (["31", "4"], ["31", "44"])
    metrics.update(*args, **kwargs)
    assert float(metrics.compute()["der"]) == pytest.approx(1 / 4)


def test_the_baseline_says_the_most_frequent_digit_the_most_frequent_number_of_times():
    train_y = np.array([[7, 7, 1, -1], [2, 7, 5, -1], [0, 7, 3, 4], [1, 2, 3, -1]])
    net = TASK.baseline(train_y, DATA)
    lp = net(torch.zeros(2, 40, 4), torch.tensor([40, 25]))
    assert greedy_decode(lp) == [[7, 7, 7], [7, 7, 7]]
    assert torch.isfinite(ctc_loss(lp, torch.tensor([[7, 7, 7], [1, 2, 3]]))).all()
    spec = {"labels": [str(d) for d in range(10)], "hparams": {"beam": 4}}
    assert TASK.predictions(lp, torch.tensor([40, 25]), spec)["transcript"].tolist() == ["777", "777"]


# the shipped variants (other tests register toy ones in the same table)
@pytest.mark.parametrize("variant", [v for v in BUILTIN if not VARIANTS[v].incompatibility(TASK)])
def test_padding_never_changes_a_transcript_or_its_loss(variant):
    torch.manual_seed(0)
    hp = {"hidden_size": 8, "num_layers": 1, "dropout": 0.0, "nhead": 2, "stride": 2, "kernel": 3}
    net = VARIANTS[variant].build(TASK, DATA, {k: v for k, v in hp.items()
                                               if k in VARIANTS[variant].hyperparameters(TASK)}).eval()
    x = torch.randn(1, 30, 4)
    y = torch.tensor([[1, 2, 2]])
    alone = net(x, torch.tensor([30]))
    padded = net(torch.cat([x, torch.zeros(1, 17, 4)], dim=1), torch.tensor([30]))
    assert TASK.transcripts(alone, 3) == TASK.transcripts(padded, 3)
    assert TASK.loss(alone, y).item() == pytest.approx(TASK.loss(padded, y).item(), rel=1e-4)


def test_the_plan_refuses_a_front_end_too_strided_for_ctc_and_skips_the_mlp(tmp_path):
    from flows.plan import PlanError, make_plan
    from flows.settings import load_settings

    preset = tmp_path / "p.toml"
    body = ('description = "t"\n[budget]\nnum_samples = 1\nmax_epochs = 1\n[space]\nhidden_size = 8\n'
            'lr = 0.01\nbatch_size = 8\n[dataset_params.spoken-digit-strings]\nframes_per_label = 8\n')
    preset.write_text(body + '[variant_space.cnn-gru]\nkernel = 6\nstride = { choice = [2, 5] }\n')
    settings = load_settings(home=tmp_path)
    with pytest.raises(PlanError, match=r"cnn-gru: stride must be at most frames_per_label / 2 on a "
                                        r"transcription dataset .* allows stride=5 .*frames_per_label=8"):
        make_plan(settings, preset=None, preset_path=preset, datasets=["spoken-digit-strings"],
                  variants_=["cnn-gru"], check_machine=False)
    preset.write_text(body + '[variant_space.cnn-gru]\nkernel = 6\nstride = 4\n')
    plan = make_plan(settings, preset=None, preset_path=preset, datasets=["spoken-digit-strings"],
                     variants_=["cnn-gru", "mlp", "seq2seq-attn"], check_machine=False)
    assert [p.variant for p in plan.pairs] == ["cnn-gru", "seq2seq-attn"]  # the decoder is a transcriber
    assert plan.skipped == ["spoken-digit-strings · mlp skipped: mlp maps the whole input at once, so on a "
                            "transcription dataset it has no frames to read a label sequence from"]


def test_the_token_loss_scores_each_label_and_the_end_and_reads_up_to_the_end_token():
    from modules.seq2seq import TokenSteps, read_tokens, token_loss

    # 3 labels + end (class 3); sequence 0 says "2 0 end", sequence 1 "1 end" then padding
    lp = torch.full((2, 3, 4), math.log(0.1))
    for row, path in enumerate(([2, 0, 3], [1, 3, 0])):
        lp[row, torch.arange(3), torch.tensor(path)] = math.log(0.7)
    out = TokenSteps(lp)
    assert read_tokens(out) == [[2, 0], [1]]
    y = torch.tensor([[2, 0], [1, -1]])
    assert token_loss(out, y).item() == pytest.approx(-math.log(0.7))  # every scored step right
    wrong = torch.tensor([[2, 1], [1, -1]])  # sequence 0's second label missed: (2 * 0.7 + 0.1) / 3
    expected = (-(2 * math.log(0.7) + math.log(0.1)) / 3 - math.log(0.7)) / 2
    assert token_loss(out, wrong).item() == pytest.approx(expected)
    # free running that stopped after 2 steps: the reference's third step counts as a uniform guess
    short = token_loss(TokenSteps(lp[:1, :2]), torch.tensor([[2, 0]]))
    assert short.item() == pytest.approx(-(2 * math.log(0.7) + math.log(0.25)) / 3)
    spec = {"labels": [str(d) for d in range(3)], "hparams": {"beam": 4}}
    assert TASK.predictions(out, torch.tensor([5, 5]), spec)["transcript"].tolist() == ["20", "1"]


def test_the_attention_decoder_learns_four_transcripts_exactly_and_stops_at_its_end_token():
    torch.manual_seed(0)
    net = VARIANTS["seq2seq-attn"].build(TASK, DATA, {"hidden_size": 16, "num_layers": 1, "dropout": 0.0})
    assert not any(type(m).__name__ == "CTCOutput" for m in net.modules())  # no CTC head around it
    unbounded = {k: v for k, v in DATA.items() if k != "max_label_length"}
    with pytest.raises(tasks.TaskError, match="needs the dataset fact max_label_length"):
        VARIANTS["seq2seq"].build(TASK, unbounded, {"hidden_size": 8})
    codes = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    labels = [[3, 1, 4], [1, 5], [9, 2, 6, 5], [0, 0, 7]]
    lengths = torch.tensor([3 * len(row) for row in labels])
    x = torch.zeros(4, int(lengths.max()), 4)
    y = torch.full((4, 4), -1)
    for i, row in enumerate(labels):
        x[i, :3 * len(row)] = codes[row].repeat_interleave(3, dim=0)  # 3 frames per digit
        y[i, :len(row)] = torch.tensor(row)
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    for _ in range(40):  # exact from about step 12 on seeds 0 to 2
        net.train()
        out = net(x, lengths, y)  # teacher forced: the labels and the end, 5 steps
        assert out.log_probs.shape == (4, 5, 11)
        loss = TASK.loss(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        free = net(x, lengths)  # free running, from its own argmax
    assert TASK.transcripts(free, 1) == labels
    assert free.log_probs.size(1) == 5  # stopped once every sequence said its end token
    assert TASK.loss(free, y).item() < 0.1
