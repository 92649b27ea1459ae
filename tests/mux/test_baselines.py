"""Baselines (vanilla adapter, ORA, DataMUX) and the registry: shapes, gradients, dtype, build_mux."""

from __future__ import annotations

import pytest
import torch

from revmux.errors import ConfigError
from revmux.mux import MUX_KINDS, ORA, DataMUX, IdentityMux, Multiplexer, RevMUX, VanillaAdapter, build_mux
from revmux.mux.baselines import BlockDemux

KINDS = ["revmux", "ora", "adapter", "datamux"]


def _rows(c: torch.Tensor, n: int) -> torch.Tensor:
    """(G, T, d) composite -> (G, N, d): request n reads position n % T (an identity tail)."""
    pos = torch.arange(n) % c.shape[1]
    return c[:, pos]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("d", [30, 32])
def test_shapes(kind: str, n: int, d: int) -> None:
    m = build_mux(kind, n, d)
    h = torch.randn(2, n, 5, d)
    c = m.mux(h)
    assert c.shape == (2, 5, d)
    assert m.demux(_rows(c, n)).shape == (2, n, d)
    assert m.demux(torch.randn(2, n, 3, d)).shape == (2, n, 3, d)
    x = m.down(h)
    assert x is None if kind == "datamux" else x.shape == (2, n, 5, d // n)


@pytest.mark.parametrize("kind", KINDS)
def test_every_param_trainable_and_reached_by_backward(kind: str) -> None:
    m = build_mux(kind, 3, 30)
    c = m.mux(torch.randn(2, 3, 4, 30))
    m.demux(_rows(c, 3)).pow(2).sum().backward()
    params = dict(m.named_parameters())
    assert params
    for name, p in params.items():
        assert p.requires_grad and p.grad is not None, f"{kind}: {name} has no gradient"


def test_ora_demux_is_registered_and_mux_is_revmux_composite() -> None:
    ora, rev = ORA(3, 30), RevMUX(3, 30)
    names = {name.split(".")[0] for name, _ in ora.named_parameters()}
    assert names == {"down_proj", "coupling", "demuxer"}
    # same Down and coupling weights -> the same composite as RevMUX
    rev.down_proj.load_state_dict(ora.down_proj.state_dict())
    rev.coupling.load_state_dict(ora.coupling.state_dict())
    h = torch.randn(2, 3, 4, 30)
    with torch.no_grad():
        torch.testing.assert_close(ora.mux(h), rev.mux(h))


def test_datamux_vectors_are_fixed_buffers() -> None:
    m = DataMUX(3, 32)
    assert "vectors" not in dict(m.named_parameters())
    assert "vectors" in dict(m.named_buffers()) and "vectors" in m.state_dict()
    assert not m.vectors.requires_grad and m.vectors.shape == (3, 32)
    assert torch.equal(m.vectors, DataMUX(3, 32).vectors)  # seeded: reproducible
    assert not torch.equal(m.vectors, DataMUX(3, 32, seed=1).vectors)
    h = torch.randn(2, 3, 4, 32)
    torch.testing.assert_close(m.mux(h), (h * m.vectors[None, :, None, :]).mean(dim=1))
    assert len(m.demuxers) == 3


def test_datamux_row_n_uses_mlp_n() -> None:
    m = DataMUX(3, 16)
    o = torch.randn(2, 3, 16)
    with torch.no_grad():
        out = m.demux(o)
        for i in range(3):
            torch.testing.assert_close(out[:, i], m.demuxers[i](o[:, i]))


def test_block_demux_equals_full_mlp_block_n() -> None:
    n, d = 3, 10
    b = BlockDemux(n, d, 7)
    o = torch.randn(2, n, 4, d)
    with torch.no_grad():
        full = b.out(torch.nn.functional.gelu(b.inp(o)))  # (G, N, P, N * d)
        out = b(o)
        for i in range(n):
            torch.testing.assert_close(out[:, i], full[:, i, :, i * d : (i + 1) * d])


def test_adapter_composite_is_residual_mix_of_contiguous_blocks() -> None:
    m = VanillaAdapter(4, 30)
    h = torch.randn(2, 4, 3, 30)
    with torch.no_grad():
        x = m.down(h)
        z = torch.cat([x[:, i] for i in range(4)] + [torch.zeros(2, 3, 2)], dim=-1)
        torch.testing.assert_close(m.mux(h), z + m.mixer(z))


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_adapters_return_bf16_for_bf16_input(kind: str) -> None:
    m = build_mux(kind, 2, 32)
    assert next(m.parameters()).dtype == torch.float32
    c = m.mux(torch.randn(2, 2, 3, 32, dtype=torch.bfloat16))
    assert c.dtype == torch.bfloat16
    assert m.demux(_rows(c, 2)).dtype == torch.bfloat16


def test_registry_kinds_and_aliases() -> None:
    assert set(MUX_KINDS) == {"revmux", "ora", "adapter", "datamux"}
    expected = {
        "revmux": RevMUX,
        "reversible": RevMUX,
        "ora": ORA,
        "adapter": VanillaAdapter,
        "vanilla": VanillaAdapter,
        "datamux": DataMUX,
    }
    for name, cls in expected.items():
        m = build_mux(name, 2, 16)
        assert type(m) is cls and isinstance(m, Multiplexer)
        assert m.kind == MUX_KINDS[m.kind].kind


@pytest.mark.parametrize("kind", KINDS + ["reversible", "vanilla", "identity"])
def test_n1_is_identity_mux_with_no_params(kind: str) -> None:
    m = build_mux(kind, 1, 16, up_hidden=5)
    assert type(m) is IdentityMux and m.kind == "identity"
    assert m.num_trainable() == 0 and len(list(m.parameters())) == 0
    h = torch.randn(2, 1, 3, 16)
    assert torch.equal(m.demux(m.mux(h).unsqueeze(1)), h)


def test_unknown_kind_names_valid_kinds() -> None:
    with pytest.raises(ConfigError) as err:
        build_mux("bogus", 2, 16)
    for name in ["revmux", "ora", "adapter", "datamux", "reversible", "vanilla", "bogus"]:
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="revmux"):
        build_mux("bogus", 1, 16)
    with pytest.raises(ConfigError, match="identity"):
        build_mux("identity", 2, 16)
    with pytest.raises(ConfigError):
        IdentityMux(2, 16)


def test_options_pass_through_and_are_checked() -> None:
    m = build_mux("ora", 2, 16, f_hidden=5, up_hidden="6", seed=None)
    assert m.coupling.f_hidden == 5 and m.demuxer.inp.out_features == 6
    assert build_mux("datamux", 2, 16, f_hidden=None).n == 2  # None options fall back to defaults
    with pytest.raises(ConfigError, match="f_hidden"):
        build_mux("datamux", 2, 16, f_hidden=8)
    with pytest.raises(ConfigError, match="N=1|>= 1|d=2"):
        build_mux("revmux", 3, 2)
