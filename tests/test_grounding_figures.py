"""The persona model's headline figures and the base-model defaults, without training."""

import pytest

from dagster_project.resources import resources_under
from dagster_project.resources.training import DEFAULT_BASE, TrainingLauncherResource
from simpersona.evaluation.report_inputs import grounding_headline, probe_table

PROBE = {
    "prompts": 20,
    "atc_buy": 0.7,
    "atc_browse": 0.2,
    "atc_buy_without_token": 0.6,
    "intent_gap": 0.5,
    "intent_gap_ci_low": 0.3,
    "intent_gap_ci_high": 0.7,
    "token_gap": 0.1,
    "token_gap_ci_low": -0.1,
    "token_gap_ci_high": 0.3,
}


def test_headline_names_the_probe_and_the_token_d_gap():
    figures = {
        "purchase_d_gap_llm_nopersona": 0.4,
        "purchase_d_gap_llm_nopersona_ci_low": 0.1,
        "purchase_d_gap_llm_nopersona_ci_high": 0.8,
    }
    out = grounding_headline(figures, PROBE)
    assert out["intent_gap_llm"] == 0.5 and out["intent_gap_llm_ci_low"] == 0.3
    assert out["intent_gap_llm_ci_high"] == 0.7 and out["token_gap_probe_llm"] == 0.1
    assert (out["token_d_gap_llm"], out["token_d_gap_llm_ci_high"]) == (0.4, 0.8)
    assert out["probe_prompts"] == 20
    # nothing probed, no LLM pair: no key invented
    assert grounding_headline({}, {}) == {}


def test_probe_table_rows_carry_their_intervals():
    t = probe_table(PROBE)
    row = t.filter(t["figure"] == "intent gap (buy − browse)").row(0, named=True)
    assert (row["value"], row["ci_low"], row["ci_high"], row["prompts"]) == (0.5, 0.3, 0.7, 20)
    assert t.filter(t["figure"].str.starts_with("add-to-cart, buy"))["ci_low"].null_count() == 2


def test_the_default_base_is_the_packaged_model_and_tiny_is_a_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMPERSONA_BASE_MODEL", raising=False)
    assert DEFAULT_BASE == "smollm2-135m-instruct"
    real = TrainingLauncherResource(base_model=DEFAULT_BASE)
    assert not real.uses_tiny() and real.base_model_name() == DEFAULT_BASE
    for tiny in (
        TrainingLauncherResource(base_model="tiny"),
        TrainingLauncherResource(base_model=None),
    ):
        assert tiny.uses_tiny() and tiny.base_model_name() == "tiny"
    # throwaway folders (tests, benchmarks) stay on the tiny model unless told otherwise
    assert resources_under(tmp_path)["training"].uses_tiny()
    chosen = resources_under(tmp_path, base_model=DEFAULT_BASE)["training"]
    assert chosen.base_model == DEFAULT_BASE and chosen.models_dir == str(tmp_path / "models")


@pytest.mark.parametrize("bad", ["/nowhere/at-all", "no-such-packaged-model"])
def test_an_unknown_base_fails_naming_it(tmp_path, bad):
    import dagster as dg

    res = TrainingLauncherResource(base_model=bad, models_dir=str(tmp_path))
    with pytest.raises(dg.Failure, match="base_model"):
        res.base_model_path()
