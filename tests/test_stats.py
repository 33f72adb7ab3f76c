"""The seed statistics on constructed cases whose answers are known by hand."""

from __future__ import annotations

import math
import warnings

import pytest
from scipy import stats as st

from flows import stats


def test_the_interval_of_one_to_five_is_the_hand_computed_student_t_interval():
    # mean 3, sd √2.5 = 1.5811, t(0.975, 4) = 2.7764; half width 2.7764 · 1.5811 / √5 = 1.9632
    s = stats.summarize([1, 2, 3, 4, 5])
    assert (s.n, s.mean) == (5, 3.0)
    assert s.sd == pytest.approx(1.581139, abs=1e-6)
    assert (s.ci_low, s.ci_high) == (pytest.approx(1.036757, abs=1e-6), pytest.approx(4.963243, abs=1e-6))
    assert s.half_width == pytest.approx(1.963243, abs=1e-6)


def test_welch_matches_the_hand_computed_statistic_and_scipy():
    # t = 0.1 / √(2 · 0.0001 / 3) = 12.247 on 4 degrees of freedom
    a, b = [0.90, 0.91, 0.92], [0.80, 0.81, 0.82]
    assert stats.welch(a, b) == pytest.approx(2 * st.t.sf(12.247449, 4), rel=1e-5)
    c, d = [0.5, 0.7, 0.65, 0.9], [0.6, 0.62, 0.61]  # unequal sizes and variances
    assert stats.welch(c, d) == pytest.approx(st.ttest_ind(c, d, equal_var=False).pvalue, rel=1e-9)


def test_a_clearly_worse_variant_is_called_worse_and_a_close_one_tied():
    verdict = stats.compare({"bilstm": [0.90, 0.91, 0.92], "rnn": [0.80, 0.81, 0.82],
                             "gru": [0.89, 0.92, 0.90]}, "max", "val/acc")
    assert verdict.winner == "bilstm"
    assert verdict.comparisons["rnn"].tied is False and verdict.comparisons["rnn"].p_holm < 0.001
    assert verdict.comparisons["gru"].tied is True and verdict.comparisons["gru"].p_holm > 0.5
    assert verdict.tied == ["gru"]
    assert verdict.comparisons["rnn"].label() == "worse (p < 0.001)"
    assert verdict.comparisons["gru"].label().startswith("tied (p 0.")
    assert verdict.comparisons["bilstm"].label() == "winner"
    assert verdict.description.startswith("Welch's t-test on 3 seeds per variant, Holm-corrected "
                                          "against the winner; two-sided, on val/acc")
    uneven = stats.compare({"a": [1, 2, 3, 4, 5], "b": [1, 2, 3]}, "max")  # Welch allows unequal n
    assert uneven.description.startswith("Welch's t-test on 3-5 seeds per variant")
    assert "With 3 seeds a difference of" in uneven.description  # the smaller n: conservative
    one_short = stats.compare({"a": [1, 2, 3, 4, 5], "b": [1, 2, 3, 4], "c": [0]}, "max")
    assert "With 4 seeds a difference of" in one_short.description  # c (1 seed) is not tested


def test_holm_matches_a_hand_worked_example():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> raised to 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == []


def test_holm_can_turn_a_nominal_difference_into_a_tie():
    scores = {"w": [1.00, 1.01, 1.02], "a": [0.98, 0.99, 1.00], "b": [0.97, 0.98, 0.99],
              "c": [0.985, 0.995, 1.005]}
    verdict = stats.compare(scores, "max")
    raw = {v: stats.welch(scores[v], scores["w"]) for v in "abc"}
    # b: t = 0.03 / √(2 · 0.0001 / 3) = 3.674 on 4 df, p = 0.021: significant on its own, but
    # the smallest of three p-values is multiplied by 3 (0.064) and the others are larger still
    assert raw["b"] == pytest.approx(2 * st.t.sf(3.674235, 4), rel=1e-5) and raw["b"] < 0.05
    assert verdict.comparisons["b"].p_holm == pytest.approx(3 * raw["b"])
    assert [verdict.comparisons[v].p_holm for v in "abc"] == pytest.approx(stats.holm([raw[v] for v in "abc"]))
    assert all(verdict.comparisons[v].tied for v in "abc")


def test_the_winner_respects_the_metric_direction():
    scores = {"lstm": [1.0, 1.1, 1.2], "gru": [2.0, 2.1, 2.2]}
    most, least = stats.compare(scores, "max"), stats.compare(scores, "min")
    assert most.winner == "gru" and most.comparisons["lstm"].tied is False
    assert least.winner == "lstm" and least.comparisons["gru"].tied is False
    with pytest.raises(ValueError, match="mode"):
        stats.compare(scores, "best")


def test_equal_means_are_broken_by_the_tie_break_then_the_name():
    means = {"bilstm": 0.98, "bigru": 0.98, "rnn": 0.90}
    assert stats.best(means, "max", {"bilstm": 0.12, "bigru": 0.09}) == "bigru"
    assert stats.best(means, "max") == "bigru"  # no tie-break: alphabetical, never arbitrary


def test_one_seed_gives_no_interval_and_no_test_and_says_so():
    s = stats.summarize([0.9])
    assert (s.n, s.mean, s.sd, s.ci_low, s.half_width) == (1, 0.9, None, None, None)
    verdict = stats.compare({"lstm": [0.9], "gru": [0.8]}, "max", "val/acc")
    assert verdict.winner == "lstm" and verdict.detectable is None and verdict.tied == []
    assert verdict.comparisons["gru"].label() == "not tested: the winner has 1 seed"
    assert "no test of val/acc" in verdict.description and "single seeds" in verdict.description
    mixed = stats.compare({"lstm": [0.9, 0.91, 0.92], "gru": [0.8]}, "max")
    assert mixed.comparisons["gru"].label() == "not tested: 1 seed"
    assert mixed.description.startswith("1-3 seeds per variant: no test")
    alone = stats.compare({"lstm": [0.9, 0.91, 0.92]}, "max")
    assert alone.winner == "lstm" and alone.description.startswith("Only lstm was retrained on seeds (3)")
    assert stats.compare({}, "max").winner is None
    with pytest.raises(ValueError):
        stats.summarize([])


def test_seeds_without_spread_are_handled_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = stats.compare({"a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0]}, "max")
        assert same.comparisons["b"].tied is True and same.comparisons["b"].p == 1.0
        apart = stats.compare({"a": [1.0, 1.0, 1.0], "b": [0.98, 0.98, 0.98]}, "max")
        assert apart.comparisons["b"].tied is False and apart.comparisons["b"].p == 0.0
        assert apart.detectable == 0.0 and "any difference" in apart.description
        assert stats.summarize([0.7, 0.7]).half_width == 0.0
        one_sided = stats.compare({"a": [1.0, 1.0, 1.0], "b": [0.5, 0.9, 1.0]}, "max")
        assert 0 < one_sided.comparisons["b"].p < 1


def test_the_detectable_difference_matches_cohens_sample_size_tables():
    # two-sided alpha 0.05, power 0.8: 64 per group detect d = 0.5, 26 per group d = 0.8
    assert stats.detectable_difference(1.0, 64) == pytest.approx(0.5, abs=0.005)
    assert stats.detectable_difference(1.0, 26) == pytest.approx(0.8, abs=0.01)
    assert stats.detectable_difference(2.0, 26) == pytest.approx(2 * stats.detectable_difference(1.0, 26))
    # large n: (z(0.975) + z(0.8)) · √(2/n)
    assert stats.detectable_difference(1.0, 10**5) == pytest.approx(2.8016 * math.sqrt(2e-5), rel=1e-3)
    assert stats.detectable_difference(1.0, 2) > stats.detectable_difference(1.0, 3) > stats.detectable_difference(1.0, 5)
    assert stats.detectable_difference(1.0, 1) is None and stats.detectable_difference(0.0, 3) == 0.0
    assert stats.pooled_sd([[1, 2, 3], [2, 4, 6], [5]]) == pytest.approx(math.sqrt((2 * 1 + 2 * 4) / 4))


def test_per_seed_metrics_are_read_from_their_mlflow_names_in_seed_order():
    metrics = {stats.seed_metric_name("val", "acc", 10): 0.3, "final/val/acc/seed2": 0.1,
               "final/val/acc/seed3": 0.2, "final/test/f1/seed2": 0.5, "val/acc": 0.9,
               "final/val/loss/seed2": float("nan")}
    assert stats.seed_metric_name("test", "mae", 4) == "final/test/mae/seed4"
    assert stats.seed_scores(metrics) == {"val/acc": [0.1, 0.2, 0.3], "test/f1": [0.5]}
