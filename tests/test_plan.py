"""One plan, checked once: every shipped preset validates, a search space that could build an
invalid network is refused in one line before any trial, and a flow started with bad input
stops before it creates any MLflow run."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.plan import PlanError, available_presets, load_preset, make_plan
from flows.settings import load_settings
from modules.variants import VARIANTS, Constraint, Variant
from tests.conftest import TINY_PRESET


@pytest.fixture
def settings(tmp_path):
    return load_settings(home=tmp_path / "home", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.parametrize("preset", [*available_presets(), TINY_PRESET])
def test_every_shipped_preset_validates(settings, preset):
    plan = make_plan(settings, preset, check_machine=False)
    assert plan.pairs
    for pair in plan.pairs:  # every configuration its spaces can produce builds a valid network
        space = plan.preset.space_for(pair.dataset, pair.variant)
        assert plan.variant(pair.variant).check_space(space, plan.task(pair.dataset)) is None


def test_the_paper_transformer_space_can_only_produce_widths_its_heads_divide(settings):
    plan = make_plan(settings, "paper", check_machine=False)
    for dataset in plan.datasets:
        space = plan.preset.space_for(dataset, "transformer")
        for width in space["hidden_size"]["choice"]:
            for heads in space["nhead"]["choice"]:
                assert width % heads == 0


def test_a_space_that_can_build_a_crashing_transformer_is_refused_in_one_line(settings, tmp_path):
    preset = tmp_path / "bad.toml"
    preset.write_text(Path(TINY_PRESET).read_text().replace(
        "[variant_space.transformer]\nnhead = 2",
        "[variant_space.transformer]\nhidden_size = { choice = [77, 128] }\nnhead = { choice = [2, 4] }"))
    with pytest.raises(PlanError) as refused:
        make_plan(settings, None, preset, variants_=["lstm", "transformer"])
    message = str(refused.value)
    assert "\n" not in message
    assert "transformer: hidden_size must be divisible by nhead, but the space allows " \
           "hidden_size=77/nhead=2, hidden_size=77/nhead=4" in message


def test_a_hyperparameter_a_variant_does_not_take_is_refused(settings, tmp_path):
    preset = tmp_path / "bad.toml"
    preset.write_text(Path(TINY_PRESET).read_text() + "\n[variant_space.lstm]\nnhead = 2\n")
    with pytest.raises(PlanError, match=r"lstm has no hyperparameter\(s\) \['nhead'\]"):
        make_plan(settings, None, preset)


def test_a_continuous_sampler_on_a_constrained_parameter_is_refused_before_any_trial():
    variant = Variant("t", "modules.encoders:TransformerEncoder", extras=("nhead",),
                      constraints=VARIANTS["transformer"].constraints)
    problem = variant.check_space({"hidden_size": {"uniform": [16, 64]}, "nhead": 2})
    assert "hidden_size must be a constant, a choice or a small randint range" in problem
    assert variant.check_space({"hidden_size": {"randint": [8, 10]}, "nhead": 2}) \
        == "t: hidden_size must be divisible by nhead, but the space allows hidden_size=9/nhead=2 " \
           "(hidden_size in [8, 9]; nhead in [2])"
    assert Constraint(("a",), lambda a: a > 0, "a positive").params == ("a",)


@pytest.mark.parametrize("text,message", [
    ("budgett = 3\n", "unknown key 'budgett'; valid: description, datasets, variants, budget"),
    ("[budget]\nmax_epoch = 3\n", "unknown key 'budget.max_epoch'; valid: num_samples, max_epochs"),
    ("[budget]\nnum_samples = 'four'\n", "budget.num_samples: Input should be a valid integer"),
    ("[space]\nlr = { normal = [0, 1] }\n", "space: lr: expected one of choice, uniform, loguniform, randint"),
    ("[dataset_params.sunspots]\nwindw = 96\n", "dataset 'sunspots' has no parameter(s) ['windw']"),
    ("[dataset_space.imdb]\nlr = 0.1\n", "dataset_space.imdb: unknown dataset 'imdb'"),
    ("[custom_variants]\nmine = \"no_such_package.nets:Encoder\"\n",
     "variant 'mine': cannot import 'no_such_package.nets:Encoder'"),
])
def test_a_bad_preset_is_named_in_one_line(settings, tmp_path, text, message):
    preset = tmp_path / "mine.toml"
    preset.write_text(text)
    with pytest.raises(PlanError) as refused:
        make_plan(settings, None, preset)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_shipped_presets_load_by_name_and_unknown_names_list_the_valid_ones():
    assert load_preset("quick").budget.num_samples == 4
    with pytest.raises(PlanError, match="unknown preset 'huge'; valid: paper, quick, standard"):
        load_preset("huge")


@pytest.mark.slow
@pytest.mark.parametrize("kwargs,message", [
    ({"preset": "huge"}, "Input should be 'paper', 'quick' or 'standard'"),
    ({"variants": ["lsmt"]}, "Input should be 'rnn', 'lstm', 'gru', 'birnn', 'bilstm', 'bigru', 'transformer', 'mlp'"),
    ({"datasets": ["imdb"]}, "unknown dataset 'imdb'; valid: japanese-vowels"),
    ({"preset_path": "BAD_PARAMS"}, "dataset 'japanese-vowels' has no parameter(s) ['window']"),
    ({"extra_variants": ["mine"]}, "unknown variant 'mine'; valid: rnn, lstm"),
])
def test_a_flow_started_with_bad_input_stops_before_any_mlflow_run(prefect_harness, tmp_path, kwargs,
                                                                    message):
    from prefect.exceptions import ParameterTypeError

    from flows.pipeline import benchmark

    if kwargs.get("preset_path") == "BAD_PARAMS":
        bad = tmp_path / "bad.toml"
        bad.write_text(Path(TINY_PRESET).read_text() + "\n[dataset_params.japanese-vowels]\nwindow = 3\n")
        kwargs = {"preset_path": str(bad)}
    db = tmp_path / "mlflow.db"
    with pytest.raises((PlanError, ParameterTypeError)) as refused:
        benchmark(**{"preset_path": TINY_PRESET, **kwargs}, tracking_uri=f"sqlite:///{db}",
                  home=str(tmp_path / "home"))
    assert message in str(refused.value)
    assert not db.exists(), "no MLflow store, let alone a run, before the plan is valid"


def test_artifact_keys_are_safe_for_prefect_and_distinct():
    from flows.pipeline import artifact_key

    assert artifact_key("leaderboard", "japanese-vowels") == "leaderboard-japanese-vowels"
    a, b = artifact_key("leaderboard", "site_load"), artifact_key("leaderboard", "site.load")
    assert a.startswith("leaderboard-site-load-") and b.startswith("leaderboard-site-load-") and a != b
    assert all(c.isdigit() or c.islower() or c == "-" for c in a + b)


def test_a_cluster_run_with_a_local_tracking_store_is_refused_up_front(tmp_path):
    settings = load_settings(home=tmp_path, ray_address="127.0.0.2:6379")
    with pytest.raises(PlanError, match="cannot write to the local tracking store sqlite:///"):
        make_plan(settings, "quick")


def test_a_tracking_server_that_does_not_answer_is_named_in_seconds(tmp_path):
    import socket
    import time

    from flows.plan import ServiceUnavailable

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(home=tmp_path, tracking_uri=f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match=f"tracking server at http://127.0.0.1:{port} does not answer"):
        make_plan(settings, "quick")
    assert time.monotonic() - started < 30  # not MLflow's minutes of retries


def test_a_variant_with_its_own_search_space_is_named_as_not_equal(settings):
    (note,) = make_plan(settings, "quick").unequal_spaces()
    assert note.startswith("transformer searches its own nhead=choice[2, 4]") and "lr=loguniform" in note
    tiny = make_plan(settings, TINY_PRESET, variants_=["lstm", "bigru"])
    assert tiny.unequal_spaces() == []  # the transformer's own space does not matter when it is not run
