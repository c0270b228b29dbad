"""``study.core.draws``: the stored draws of a Gaussian approximation and their size cap."""

import numpy as np
import pytest

from study.core.draws import DRAW_ELEMENTS, MIN_DRAWS, diagonal_gaussian_draws, draw_count, gaussian_draws


@pytest.mark.parametrize("d, expected", [(1, 1000), (9_610, 1000), (10_000, 1000), (20_000, 500),
                                         (112_510, MIN_DRAWS), (975_010, MIN_DRAWS)])
def test_draw_count_keeps_the_requested_draws_up_to_the_element_budget(d, expected):
    assert draw_count(1000, d) == expected
    assert draw_count(1000, d) * d <= max(DRAW_ELEMENTS, MIN_DRAWS * d)
    assert draw_count(50, d) <= 50  # never more than asked for


def test_diagonal_draws_are_the_same_numbers_as_mean_plus_sd_times_noise():
    rng = np.random.default_rng(1)
    mean, sd = rng.normal(size=40), rng.uniform(0.1, 2.0, size=40)
    got = diagonal_gaussian_draws(mean, sd, 300, seed=7)
    expected = (mean + sd * np.random.default_rng(7).standard_normal((300, 40)))[None]
    assert got.shape == (1, 300, 40)
    np.testing.assert_array_equal(got, expected)


def test_large_approximations_store_fewer_draws_with_the_right_moments():
    d = 2 * DRAW_ELEMENTS // 1000  # twice the budget at 1,000 draws: 500 draws
    mean, sd = np.full(d, 3.0), np.full(d, 2.0)
    draws = diagonal_gaussian_draws(mean, sd, 1000, seed=0)[0]
    assert draws.shape == (500, d)
    # 500 x d standard normals: the grand mean's SE is sd / sqrt(500 d); 5 SE keeps a false
    # failure below one in a million.
    assert abs(draws.mean() - 3.0) < 5 * 2.0 / np.sqrt(draws.size)
    dense = gaussian_draws(np.zeros(3), np.eye(3), 1000, seed=0)
    assert dense.shape == (1, 1000, 3)
