"""AULC, labels-to-reach and reduction ratio on hand-made curves (numbers worked out by hand)."""

import pytest

from al_backend.errors import InputError
from al_backend.metrics import aulc, labels_to_reach, reduction_ratio


def test_aulc_trapezoids_over_the_measured_range():
    # (10 * (0.5 + 0.7) / 2 + 10 * (0.7 + 0.9) / 2) / 20 = (6 + 8) / 20
    assert aulc([10, 20, 30], [0.5, 0.7, 0.9]) == pytest.approx(0.7)


def test_aulc_holds_the_last_value_up_to_the_budget():
    # 0..10: (0.2 + 0.6) / 2 * 10 = 4; 10..20: 0.6 * 10 = 6; (4 + 6) / 20
    assert aulc([0, 10], [0.2, 0.6], budget=20) == pytest.approx(0.5)


def test_aulc_starts_mid_segment():
    # from 5: 5..10 is (0.5 + 1) / 2 * 5 = 3.75, 10..20 is 10 -> 13.75 / 15
    assert aulc([0, 10, 20], [0.0, 1.0, 1.0], start=5) == pytest.approx(13.75 / 15)


def test_aulc_constant_curve_is_its_value_and_single_point_works():
    assert aulc([10, 50, 90], [0.8, 0.8, 0.8]) == pytest.approx(0.8)
    assert aulc([10], [0.42]) == pytest.approx(0.42)


def test_aulc_rejects_unordered_labels_and_bad_budget():
    with pytest.raises(InputError):
        aulc([10, 10, 20], [0.1, 0.2, 0.3])
    with pytest.raises(InputError):
        aulc([10, 20], [0.1, 0.2], start=30, budget=20)


def test_labels_to_reach_interpolates_the_first_crossing():
    assert labels_to_reach([10, 20, 30], [0.5, 0.7, 0.9], 0.8) == pytest.approx(25.0)
    assert labels_to_reach([10, 20, 30], [0.5, 0.7, 0.9], 0.5) == pytest.approx(10.0)
    # the first crossing counts, not a later one
    assert labels_to_reach([10, 20, 30, 40], [0.5, 0.9, 0.6, 0.95], 0.7) == pytest.approx(15.0)
    assert labels_to_reach([10, 20, 30], [0.5, 0.7, 0.9], 0.95) is None


def test_reduction_ratio_against_random():
    # random ends at 0.7, reached at 30; the strategy crosses 0.7 halfway between 10 (0.6) and 20 (0.8)
    needed, ratio = reduction_ratio([10, 20, 30], [0.6, 0.8, 0.9], [10, 20, 30], [0.5, 0.6, 0.7])
    assert needed == pytest.approx(15.0)
    assert ratio == pytest.approx(0.5)


def test_reduction_ratio_uses_randoms_own_first_crossing_and_random_scores_one():
    rx, ra = [10, 20, 30], [0.5, 0.7, 0.7]  # random plateaus at 20
    assert reduction_ratio(rx, ra, rx, ra) == (pytest.approx(20.0), pytest.approx(1.0))
    assert reduction_ratio([10, 20, 30], [0.7, 0.8, 0.8], rx, ra)[1] == pytest.approx(0.5)
    assert reduction_ratio([10, 20, 30], [0.4, 0.5, 0.6], rx, ra) == (None, None)
