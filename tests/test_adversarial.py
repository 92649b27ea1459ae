"""revmux.adversarial: the flip shares equal a brute-force count through MuxModel.forward."""

from __future__ import annotations

import pytest
import torch

from revmux.adversarial import adversarial_partners, placements
from revmux.backbones import load_backbone
from revmux.data import tokenize
from revmux.errors import ConfigError
from revmux.model import MuxModel
from tests.test_evaluate import _mux, _ragged, tiny_dir  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_placements_put_the_row_in_every_slot_with_other_partners():
    gen = torch.Generator().manual_seed(0)
    targets = torch.tensor([3, 0, 9])
    groups, slots = placements(targets, 10, 4, 5, gen)
    assert groups.shape == (3 * 5 * 4, 4) and slots.tolist()[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    own = groups.gather(1, slots.unsqueeze(1)).squeeze(1)
    assert torch.equal(own, targets.repeat_interleave(5 * 4))
    for g in groups.tolist():
        assert len(set(g)) == 4  # distinct rows: the target never partners itself
    # the 4 placements of one candidate hold the same partners, in the same order
    block = groups[:4]
    partners = [[x for x in g if x != 3] for g in block.tolist()]
    assert all(p == partners[0] for p in partners)


@pytest.mark.parametrize("n", [2, 4])
def test_flip_shares_equal_a_brute_force_count(n, tiny_dir):  # noqa: F811
    view = load_backbone(tiny_dir)
    model = _mux(view, tiny_dir, n, k=1).eval()
    data = _ragged(rows=17)
    report = adversarial_partners(model, data, candidates=3, rows=5, batch_size=4, seed=7)

    gen = torch.Generator().manual_seed(7)
    targets = torch.randperm(len(data), generator=gen)[:5]
    groups, slots = placements(targets, len(data), n, 3, gen)
    enc = tokenize(view.tokenizer, data, model.config.max_length)
    with torch.inference_mode():
        teacher = view.forward_unsplit(enc).argmax(-1)
        flips = []
        for g, s in zip(groups.tolist(), slots.tolist(), strict=True):
            batch = {key: v[g] for key, v in enc.items()}
            pred = model(batch, order=torch.arange(n)).argmax(-1)  # serving's forward on this one group
            flips.append(bool(pred[s] != teacher[g[s]]))
    flips = torch.tensor(flips).view(5, 3, n)
    assert report.placement_flip_share == pytest.approx(flips.float().mean().item())
    assert report.flip_share == pytest.approx(flips.any(2).float().mean().item())
    assert report.flippable_rows == pytest.approx(flips.any(2).any(1).float().mean().item())
    assert report.flippable_rows > 0  # random adapters: partners do change answers
    assert (report.rows, report.candidates, report.placements) == (5, 3, 3 * n)


def test_n1_has_no_partners(tiny_dir):  # noqa: F811
    model = MuxModel.from_backbone(load_backbone(tiny_dir), n=1, k=1)
    with pytest.raises(ConfigError, match="N >= 2"):
        adversarial_partners(model, _ragged(rows=5))


def test_fallback_sweep_matches_evaluate_at_margin_zero_and_the_teacher_at_one(tiny_dir):  # noqa: F811
    from revmux.evaluate import evaluate
    from revmux.fallback import fallback_sweep

    model = _mux(load_backbone(tiny_dir), tiny_dir, 2, k=1).eval()
    data = _ragged(rows=23)
    zero, half, one = fallback_sweep(model, data, [0.0, 0.5, 1.0], groupings=3, batch_size=4)
    report = evaluate(model, data, groupings=3, batch_size=4)
    assert zero["accuracy_mean"] == pytest.approx(report.accuracy_mean) and zero["rerun_share"] == 0.0
    assert zero["bound"] == pytest.approx(report.bound)
    assert one["rerun_share"] == pytest.approx(22 / 23)  # every multiplexed answer; the leftover ran alone
    assert one["agreement"] == 1.0 and one["accuracy_mean"] == pytest.approx(report.teacher_accuracy)
    assert zero["rerun_share"] <= half["rerun_share"] <= one["rerun_share"] and one["bound"] < 1.0
    with pytest.raises(ConfigError, match=r"margins in \[0, 1\]"):
        fallback_sweep(model, data, [1.5])
