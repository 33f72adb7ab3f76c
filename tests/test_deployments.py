"""The Prefect UI's forms for the served flows, as Prefect 3 builds them from the flows'
signatures and docstrings (no server needed; tests/integration/test_serve.py serves them)."""

from __future__ import annotations


def _schema(flow) -> dict:
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(flow).model_dump()


def test_forms_offer_presets_and_variants_as_choices_datasets_as_lists_budgets_as_numbers():
    from flows import pipeline
    from flows.plan import available_presets
    from modules.variants import BUILTIN

    bench = _schema(pipeline.benchmark)
    props, defs = bench["properties"], bench["definitions"]
    assert defs["PresetName"]["enum"] == available_presets()
    assert defs["VariantName"]["enum"] == list(BUILTIN)
    assert props["preset"]["$ref"] == "#/definitions/PresetName"
    assert {"type": "array", "items": {"$ref": "#/definitions/VariantName"}} in props["variants"]["anyOf"]
    assert {"type": "array", "items": {"type": "string"}} in props["datasets"]["anyOf"]
    for budget in ("num_samples", "max_epochs"):
        assert {"type": "integer", "exclusiveMinimum": 0} in props[budget]["anyOf"]
    sweep = _schema(pipeline.sweep)["properties"]
    assert {"$ref": "#/definitions/VariantName"} in sweep["variant"]["anyOf"]
    assert _schema(pipeline.prepare_dataset)["properties"]["datasets"]["type"] == "array"


def test_every_field_of_every_served_form_says_what_it_is():
    from flows.deployments import OFFERS, _flow

    assert [o.flow for o in OFFERS] == ["benchmark", "sweep", "prepare_dataset", "import_dataset"]
    for offer in OFFERS:
        props = _schema(_flow(offer.flow))["properties"]
        bare = [name for name, field in props.items() if not field.get("description")]
        assert not bare, f"{offer.flow}: fields without a description: {bare}"


def test_a_budget_from_the_form_overrides_the_preset_and_is_checked(tmp_path):
    import pytest

    from flows.pipeline import _with_budget
    from flows.plan import PlanError, make_plan
    from flows.settings import load_settings
    from tests.conftest import TINY_PRESET

    plan = make_plan(load_settings(home=tmp_path), None, TINY_PRESET, check_machine=False)
    assert _with_budget(plan, num_samples=None) is plan
    changed = _with_budget(plan, num_samples=1, max_epochs=3)
    assert (changed.preset.budget.num_samples, changed.preset.budget.max_epochs) == (1, 3)
    assert changed.preset.fingerprint() != plan.preset.fingerprint(), "a new run key, not a resume"
    with pytest.raises(PlanError, match="budget.num_samples: Input should be greater than 0"):
        _with_budget(plan, num_samples=0)
