"""A/B variant assignment and the winner test (domain.variants)."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from statistics import NormalDist

import pytest

from domain.variants import assign_variant, pick_winner, two_proportion_test

AB = ("A", "B")
ABC = ("A", "B", "C")


def test_assignment_is_stable_and_ignores_email_case_and_spaces():
    first = assign_variant("cmp_1", "Jane.Doe@Example.com", 0, AB)
    assert all(assign_variant("cmp_1", "Jane.Doe@Example.com", 0, AB) == first for _ in range(5))
    assert assign_variant("cmp_1", "  jane.doe@example.com ", 0, AB) == first
    assert assign_variant("cmp_1", "jane.doe@example.com", 0, ABC) == assign_variant(
        "cmp_1", "JANE.DOE@EXAMPLE.COM", 0, ABC
    )


def test_assignment_is_pinned_to_sha256():
    """Changing the scheme would reshuffle contacts of running tests, so the scheme is pinned."""
    key = "cmp_1\x1fjane.doe@example.com\x1f2"
    index = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 3
    assert assign_variant("cmp_1", "jane.doe@example.com", 2, ABC) == ABC[index]


def test_assignment_is_roughly_uniform_over_10000_contacts():
    counts = Counter(
        assign_variant("cmp_42", f"user{i}@example.com", 1, ABC) for i in range(10_000)
    )
    assert set(counts) == set(ABC)
    expected = 10_000 / 3
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom, p = 0.001
    assert all(abs(c - expected) < 0.05 * expected for c in counts.values())


def test_steps_and_campaigns_draw_independently():
    emails = [f"user{i}@example.com" for i in range(2_000)]
    step0 = [assign_variant("cmp_42", e, 0, AB) for e in emails]
    step1 = [assign_variant("cmp_42", e, 1, AB) for e in emails]
    other = [assign_variant("cmp_43", e, 0, AB) for e in emails]
    same_step = sum(a == b for a, b in zip(step0, step1, strict=True)) / len(emails)
    same_campaign = sum(a == b for a, b in zip(step0, other, strict=True)) / len(emails)
    assert 0.45 < same_step < 0.55 and 0.45 < same_campaign < 0.55


def test_single_variant_and_empty_list():
    assert assign_variant("c", "x@example.com", 0, ["only"]) == "only"
    with pytest.raises(ValueError):
        assign_variant("c", "x@example.com", 0, [])


def test_z_test_matches_known_values():
    # 200/1000 vs 250/1000: pooled p = 0.225, se = sqrt(0.225*0.775*0.002) = 0.0186749
    z, p = two_proportion_test(200, 1000, 250, 1000)
    assert z == pytest.approx(-2.67738, abs=1e-4)
    assert p == pytest.approx(0.0074197, abs=1e-6)
    assert p == pytest.approx(2 * (1 - NormalDist().cdf(abs(z))), rel=1e-9)
    # swapping the arms flips the sign only
    z2, p2 = two_proportion_test(250, 1000, 200, 1000)
    assert z2 == pytest.approx(-z) and p2 == pytest.approx(p)
    # 45/500 vs 30/500: pooled 0.075, se = sqrt(0.075*0.925*0.004) = 0.0166583,
    # z = 0.03 / se = 1.80090, p = 0.071719 (not significant at 0.05)
    z3, p3 = two_proportion_test(45, 500, 30, 500)
    assert z3 == pytest.approx(1.80090, abs=1e-4) and p3 == pytest.approx(0.071719, abs=1e-5)


def test_z_test_degenerate_cases():
    assert two_proportion_test(0, 0, 5, 10) == (0.0, 1.0)
    assert two_proportion_test(0, 100, 0, 100) == (0.0, 1.0)
    assert two_proportion_test(100, 100, 50, 50) == (0.0, 1.0)
    z, p = two_proportion_test(10, 100, 10, 100)
    assert z == 0.0 and p == pytest.approx(1.0)
    assert not math.isnan(two_proportion_test(1, 1, 0, 1)[1])
    with pytest.raises(ValueError):
        two_proportion_test(11, 10, 1, 10)
    with pytest.raises(ValueError):
        two_proportion_test(-1, 10, 1, 10)


def test_no_winner_under_the_minimum_sample():
    # a huge difference, but B has only 99 sends
    assert pick_winner({"A": (10, 500), "B": (60, 99)}) is None
    assert pick_winner({"A": (10, 500), "B": (60, 99)}, min_sample=50) == "B"


def test_winner_once_significant():
    assert pick_winner({"A": (200, 1000), "B": (250, 1000)}) == "B"
    assert pick_winner({"A": (45, 500), "B": (30, 500)}) is None  # p = 0.072
    assert pick_winner({"A": (45, 500), "B": (30, 500)}, alpha=0.1) == "A"
    assert pick_winner({"A": (100, 1000), "B": (100, 1000)}) is None  # tie
    assert pick_winner({"A": (100, 1000)}) is None


def test_more_than_two_variants_need_to_beat_each_other_one():
    # C beats A clearly but not B
    assert pick_winner({"A": (100, 1000), "B": (140, 1000), "C": (150, 1000)}) is None
    assert pick_winner({"A": (100, 1000), "B": (100, 1000), "C": (160, 1000)}) == "C"
    # D vs each other: p = 0.0301, significant at 0.05 but not at the Bonferroni 0.05 / 3
    stats = {"A": (100, 1000), "B": (100, 1000), "C": (100, 1000), "D": (131, 1000)}
    assert 0.05 / 3 < two_proportion_test(131, 1000, 100, 1000)[1] < 0.05
    assert pick_winner(stats) is None
    assert pick_winner({"A": (100, 1000), "D": (131, 1000)}) == "D"
