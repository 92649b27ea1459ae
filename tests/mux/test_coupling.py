"""ReversibleCoupling: exact inverse for any N >= 1, inverse_one, one shared set of F parameters."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revmux.mux import ReversibleCoupling
from revmux.mux.coupling import F_INIT_STD

PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def randomize_f(c: ReversibleCoupling, literal_std: float | None = None) -> None:
    """Re-init every F parameter away from the near-identity init.

    Default: weights N(0, 1 / fan_in), biases N(0, 0.5^2): each F changes its slot by O(1) while the chain
    stays O(1) in magnitude. With `literal_std`, every parameter is N(0, literal_std^2) (explosive chains).
    """
    for f in c.fs:
        for lin in (f[0], f[2]):
            w_std = literal_std if literal_std is not None else 1 / math.sqrt(lin.in_features)
            torch.nn.init.normal_(lin.weight, std=w_std)
            torch.nn.init.normal_(lin.bias, std=literal_std if literal_std is not None else 0.5)


shapes = st.fixed_dictionaries(
    {
        "n": st.integers(2, 8),
        "d_sub": st.integers(1, 24),
        "batch": st.integers(1, 3),
        "t": st.integers(1, 5),
        "f_hidden": st.one_of(st.none(), st.integers(1, 64)),
        "seed": st.integers(0, 2**31 - 1),
    }
)


def _make(s: dict, literal_std: float | None = None) -> tuple[ReversibleCoupling, torch.Tensor]:
    torch.manual_seed(s["seed"])
    c = ReversibleCoupling(s["n"], s["d_sub"], s["f_hidden"])
    randomize_f(c, literal_std)
    return c, torch.randn(s["batch"], s["t"], s["n"], s["d_sub"])


@PROPERTY
@given(shapes)
def test_inverse_undoes_forward(s: dict) -> None:
    c, x = _make(s)
    with torch.no_grad():
        y = c(x)
        assert (y - x).abs().max() > 1e-2, "F must be non-trivial for the test to mean anything"
        torch.testing.assert_close(c.inverse(y), x, atol=1e-5, rtol=0)


@PROPERTY
@given(shapes)
def test_inverse_exact_with_std_half_weights(s: dict) -> None:
    # With every F parameter N(0, 0.5^2) the chain can grow to |y| ~ 1e9 for N = 8, d_sub = 24, so
    # fp32 round-off is measured relative to the largest |y|.
    c, x = _make(s, literal_std=0.5)
    with torch.no_grad():
        y = c(x)
        err = (c.inverse(y) - x).abs().max().item()
    assert err <= 1e-5 * max(1.0, y.abs().max().item())


@PROPERTY
@given(shapes)
def test_inverse_one_matches_inverse(s: dict) -> None:
    c, x = _make(s)
    with torch.no_grad():
        y = c(x) + 0.1 * torch.randn_like(x)  # any y, not only an image of forward
        full = c.inverse(y)
        for n in range(s["n"]):
            torch.testing.assert_close(c.inverse_one(y, n), full[..., n, :], atol=1e-6, rtol=0)


def test_forward_matches_equations() -> None:
    c = ReversibleCoupling(3, 4, 8)
    randomize_f(c)
    x = torch.randn(2, 3, 4)
    f = c.fs
    y0 = x[:, 0] + f[0](x[:, 2])
    y1 = x[:, 1] + f[1](y0)
    y2 = x[:, 2] + f[2](y1)
    torch.testing.assert_close(c(x), torch.stack([y0, y1, y2], dim=1))


def test_n1_chain_is_invertible() -> None:
    c = ReversibleCoupling(1, 5, 7)
    randomize_f(c)
    x = torch.randn(4, 1, 5)
    y = c(x)
    torch.testing.assert_close(y[:, 0], x[:, 0] + c.fs[0](torch.zeros(4, 5)))
    torch.testing.assert_close(c.inverse(y), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(c.inverse_one(y, 0), x[:, 0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_exactly_n_f_modules_of_parameters(n: int) -> None:
    d_sub, fh = 6, 11
    c = ReversibleCoupling(n, d_sub, fh)
    per_f = d_sub * fh + fh + fh * d_sub + d_sub
    assert len(c.fs) == n
    assert sum(p.numel() for p in c.parameters()) == n * per_f
    assert len(list(c.parameters())) == 4 * n


def test_f_default_width_and_near_identity_init() -> None:
    c = ReversibleCoupling(4, 8)
    assert c.f_hidden == 32
    for f in c.fs:
        assert torch.all(f[2].bias == 0)
        assert f[2].weight.std().item() == pytest.approx(F_INIT_STD, rel=0.3)
    x = torch.randn(16, 4, 8)
    with torch.no_grad():
        assert (c(x) - x).abs().max() < 0.5


@pytest.mark.parametrize("j", [0, 1, 2])
def test_f_shared_between_directions(j: int) -> None:
    c = ReversibleCoupling(3, 5, 9)
    randomize_f(c)
    x = torch.randn(6, 3, 5)
    with torch.no_grad():
        y_before = c(x)
        inv_before = c.inverse(y_before)
        c.fs[j][0].weight.add_(0.5 * torch.randn_like(c.fs[j][0].weight))
        y_after = c(x)
        assert (y_after - y_before).abs().max() > 1e-3  # forward uses F_j
        assert (c.inverse(y_before) - inv_before).abs().max() > 1e-3  # inverse uses the same F_j
        torch.testing.assert_close(c.inverse(y_after), x, atol=1e-5, rtol=0)


def test_bad_shapes_raise() -> None:
    c = ReversibleCoupling(3, 4)
    with pytest.raises(ValueError, match="N=3"):
        c(torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="slot index"):
        c.inverse_one(torch.randn(2, 3, 4), 3)
