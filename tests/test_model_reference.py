"""A saved RevMUX adapter gives the fp32 outputs of a plain reference implementation of the method.

The reference below is written from docs/method.md section 3 with the saved weights alone (F.linear on
the state dict, one group at a time over the whole padded batch, no runs, no fused or batched paths), so
that any speed work on `MuxModel.forward` and the mux forward must keep these numbers (to 1e-5).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from revmux.model import MuxModel
from revmux.runs import plan_groups
from tests.tiny import tiny_batch, tiny_bert


def _mlp(sd: dict[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    """Linear -> GELU -> Linear with the weights saved under `prefix`.0 and `prefix`.2."""
    hidden = F.gelu(F.linear(x, sd[f"{prefix}.0.weight"], sd[f"{prefix}.0.bias"]))
    return F.linear(hidden, sd[f"{prefix}.2.weight"], sd[f"{prefix}.2.bias"])


def reference_logits(model: MuxModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Length-aware groups of N, each muxed, run through layers [k, L) and demuxed on its own."""
    view, N, k = model.view, model.n, model.k
    sd = {key: value.float() for key, value in model.mux.state_dict().items()}
    d = view.hidden_size
    d_sub = d // N
    state = view.run_layers(view.embed(batch), 0, k)
    mask = state.attention_mask
    perm = plan_groups(mask.sum(1), N, length_aware=True)
    logits = torch.zeros(mask.shape[0], view.num_labels)
    G = mask.shape[0] // N
    for g in range(G):
        rows = perm[g * N : (g + 1) * N]
        x = [F.linear(state.hidden[r], sd["down_proj.weight"], sd["down_proj.bias"]) for r in rows]
        ys = [x[0] + _mlp(sd, "coupling.fs.0", x[N - 1])]
        for n in range(1, N):
            ys.append(x[n] + _mlp(sd, f"coupling.fs.{n}", ys[n - 1]))
        packed = F.pad(torch.cat(ys, dim=-1), (0, d - N * d_sub))  # (T, d)
        comp = sd["composite_mean"] + packed @ sd["composite_basis"]
        comp_mask = mask[rows].amax(0, keepdim=True)
        out = view.run_layers(view.composite_state(comp.unsqueeze(0), comp_mask), k, view.num_layers)
        o = out.hidden[0, 0]  # CLS, the position BERT's head reads
        y = ((o - sd["composite_mean"]) @ sd["composite_basis"].T)[: N * d_sub].view(N, d_sub)
        xs = [y[0]] * N
        for n in range(N - 1, 0, -1):
            xs[n] = y[n] - _mlp(sd, f"coupling.fs.{n}", y[n - 1])
        xs[0] = y[0] - _mlp(sd, "coupling.fs.0", xs[N - 1])
        for n, r in enumerate(rows):
            up = _mlp(sd, "up_proj", xs[n])
            logits[r] = view.head(up.unsqueeze(0), mask[r : r + 1])[0]
    rest = perm[G * N :]
    if rest.numel():
        sub = {key: value[rest] for key, value in batch.items()}
        logits[rest] = view.forward_unsplit(sub)
    return logits


@pytest.mark.parametrize(("n", "k", "batch_size"), [(2, 1, 40), (4, 1, 35), (3, 2, 26), (2, 2, 6)])
def test_saved_adapter_gives_the_reference_outputs(n, k, batch_size, tmp_path):
    view = tiny_bert()
    model = MuxModel.from_backbone(view, n=n, k=k)
    batch = tiny_batch([3 + (i * 7) % 29 for i in range(batch_size)], seed=5)
    torch.manual_seed(1)
    with torch.no_grad():
        model.mux.init_down_pca(model.prefill(tiny_batch([20] * 8, seed=6)).hidden.reshape(-1, 32))
        for p in model.mux.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(tmp_path)
    loaded = MuxModel.from_pretrained(tmp_path, view)
    with torch.inference_mode():
        expected = reference_logits(loaded, batch)
        forward = loaded(batch, length_aware=True)
        state = loaded.prefill(batch)
        from_prefill = loaded.forward_from_prefill(state, length_aware=True).logits
    torch.testing.assert_close(forward, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_prefill, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(expected, view.forward_unsplit(batch), atol=1e-3)  # the adapters matter
