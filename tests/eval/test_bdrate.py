import math

import numpy as np
import pytest

from vtok.eval.bdrate import bd_quality, bd_rate

RATES = [0.05, 0.1, 0.2, 0.4, 0.8]
PSNR = [26.0, 28.5, 30.8, 32.9, 34.7]


def test_bd_rate_of_a_curve_shifted_by_a_known_factor():
    # the same quality at 80 % of the bits: BD-rate -20 %, exactly
    got = bd_rate(RATES, PSNR, [r * 0.8 for r in RATES], PSNR)
    assert got.value == pytest.approx(-20.0, abs=1e-9)
    assert (got.low, got.high) == (26.0, 34.7)
    worse = bd_rate(RATES, PSNR, [r * 1.5 for r in RATES], PSNR)
    assert worse.value == pytest.approx(50.0, abs=1e-9)


def test_bd_quality_of_a_curve_shifted_by_a_known_amount():
    got = bd_quality(RATES, PSNR, RATES, [q + 1.25 for q in PSNR])
    assert got.value == pytest.approx(1.25, abs=1e-9)
    lpips = [0.40, 0.30, 0.22, 0.16, 0.12]  # lower is better: a better test is negative
    assert bd_quality(RATES, lpips, RATES, [v - 0.05 for v in lpips]).value == pytest.approx(
        -0.05, abs=1e-9)


def test_bd_rate_matches_the_closed_form_on_a_log_linear_curve():
    # quality = 10 log2(rate) + c: doubling rate adds 10; +5 quality at equal rate is a
    # factor 2**-0.5 in rate at equal quality
    rates = np.array([0.1, 0.2, 0.4, 0.8])
    quality = 10 * np.log2(rates) + 40
    got = bd_rate(rates, quality, rates, quality + 5)
    assert got.value == pytest.approx((2**-0.5 - 1) * 100, abs=1e-6)


def test_bd_reports_no_overlap_instead_of_extrapolating():
    got = bd_quality(RATES, PSNR, [0.001, 0.002, 0.004], [15.0, 16.0, 17.0])
    assert got.value is None and "no overlap in rate" in got.note
    got = bd_rate(RATES, PSNR, [0.001, 0.002, 0.004], [15.0, 16.0, 17.0])
    assert got.value is None and "no overlap in quality" in got.note


def test_bd_fits_fewer_points_with_a_lower_degree_and_refuses_one_point():
    got = bd_quality([0.1, 0.4], [30.0, 34.0], [0.1, 0.4], [31.0, 35.0])
    assert got.value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 rate points"):
        bd_rate([0.1], [30.0], RATES, PSNR)
    with pytest.raises(ValueError, match="positive"):
        bd_rate([0.0, 0.1], [30.0, 31.0], RATES, PSNR)
    assert math.isfinite(bd_rate(RATES, PSNR, RATES, PSNR).value)
