"""``models._linear.linear``: the matrix-product linear predictor, against the broadcast sum."""

import pytest
import torch

from models._linear import linear


@pytest.mark.parametrize("batch", [(), (7, 1), (3, 2, 1)])
def test_linear_equals_the_broadcast_sum(batch):
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(11, 4, generator=generator, dtype=torch.float64)
    w = torch.randn(batch + (4,), generator=generator, dtype=torch.float64)
    expected = (X * w).sum(-1)
    got = linear(X, w)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_linear_refuses_a_batch_that_would_not_line_up_with_the_plate():
    with pytest.raises(ValueError, match="expected"):
        linear(torch.ones(5, 3), torch.ones(5, 3))
