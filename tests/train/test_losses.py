"""revmux.train.losses: each term at its known extremes, and mux_loss as their weighted sum."""

from __future__ import annotations

import pytest
import torch

from revmux.train.losses import (
    centred,
    group_cos_penalty,
    info_nce,
    kd_kl,
    mux_loss,
    pooled,
    state_mse,
    teacher_targets,
)


def test_info_nce_is_zero_for_identical_separated_reps_and_high_when_shuffled():
    reps = torch.eye(8, 16) * 3.0  # 8 orthogonal reps: cos 1 on the diagonal, 0 elsewhere
    assert info_nce(reps, reps.clone()).item() < 1e-6
    shuffled = reps[torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])]
    assert info_nce(reps, shuffled).item() > 15.0
    assert info_nce(reps, reps, scale=1.0).item() > 1.0  # the scale sharpens the softmax


def test_centred_info_nce_tells_apart_reps_that_share_one_large_direction():
    """Like a decoder LLM's read states (pairwise cosine ~0.98): raw cosines cannot tell the rows apart,
    centred at the teacher's batch mean they can."""
    torch.manual_seed(0)
    common = torch.zeros(16)
    common[0] = 50.0
    teacher = common + torch.randn(8, 16)
    cos = torch.nn.functional.normalize(teacher, dim=-1) @ torch.nn.functional.normalize(teacher, dim=-1).T
    assert cos.min().item() > 0.95
    assert info_nce(teacher, teacher.clone()).item() > 1.0  # even a perfect student: far from 0
    s, t = centred(teacher, teacher)
    assert info_nce(s, t).item() < 0.05 and torch.allclose(t.mean(dim=0), torch.zeros(16), atol=1e-5)
    student = teacher + 1.0  # the student is shifted by its own constant: the teacher's mean is taken away
    assert torch.allclose(centred(student, teacher)[0], s + 1.0)
    labels = torch.zeros(8, dtype=torch.long)
    logits = torch.zeros(8, 2)
    kw = {"lambda_kd": 0.0, "lambda_nce": 1.0}
    _, raw = mux_loss(logits, teacher, teacher, logits, labels, **kw)
    _, centre = mux_loss(logits, teacher, teacher, logits, labels, nce_centre=True, **kw)
    assert centre["nce"] == pytest.approx(info_nce(s, t).item()) and centre["nce"] < raw["nce"] - 1.0


def test_kd_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(5, 3)
    assert kd_kl(logits, logits.clone()).abs().item() < 1e-6
    assert kd_kl(logits, logits + torch.tensor([2.0, 0.0, -1.0])).item() > 0.01
    assert kd_kl(logits, logits + 7.0).abs().item() < 1e-6  # softmax is shift-invariant
    assert kd_kl(logits, -logits, temperature=2.0).item() > 0


def test_cos_penalty_zero_for_orthogonal_one_for_parallel():
    e = torch.eye(4)
    ortho = torch.stack([e[0], e[1], e[2]]).view(1, 3, 1, 4)  # (G=1, N=3, T=1, d_sub=4)
    assert group_cos_penalty(ortho).item() == pytest.approx(0.0, abs=1e-7)
    parallel = torch.stack([e[0], 2 * e[0], -3 * e[0]]).view(1, 3, 1, 4)  # |cos| = 1 for every pair
    assert group_cos_penalty(parallel).item() == pytest.approx(1.0, abs=1e-6)
    assert group_cos_penalty(torch.randn(2, 1, 5, 4)).item() == 0.0  # N = 1: no pairs


def test_cos_penalty_compares_per_position_and_skips_padding():
    e = torch.eye(4)
    # position 0: orthogonal pair; position 1: parallel pair
    down = torch.stack([torch.stack([e[0], e[1]]), torch.stack([e[2], e[2]])], dim=1).unsqueeze(
        0
    )  # (1, 2, 2, 4)
    assert group_cos_penalty(down).item() == pytest.approx(0.5)
    mask = torch.tensor([[[1, 1], [1, 0]]])  # request 1 is padding at position 1
    assert group_cos_penalty(down, mask).item() == pytest.approx(0.0, abs=1e-7)


def test_mux_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    s_logits, t_logits = torch.randn(6, 2), torch.randn(6, 2)
    s_reps, t_reps = torch.randn(6, 8), torch.randn(6, 8)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    down = torch.randn(3, 2, 4, 4)
    total, parts = mux_loss(
        s_logits, s_reps, t_reps, t_logits, labels, down=down, lambda_nce=0.25, lambda_kd=1.0, lambda_cos=0.5
    )
    ce = torch.nn.functional.cross_entropy(s_logits, labels)
    expected = (
        ce + 0.25 * info_nce(s_reps, t_reps) + kd_kl(t_logits, s_logits) + 0.5 * group_cos_penalty(down)
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["loss"] == pytest.approx(total.item()) and parts["ce"] == pytest.approx(ce.item())
    _, only_ce = mux_loss(s_logits, s_reps, t_reps, t_logits, labels, lambda_nce=0, lambda_kd=0, lambda_cos=0)
    assert (
        only_ce["loss"] == pytest.approx(ce.item())
        and only_ce["nce"] == only_ce["kd"] == only_ce["cos"] == 0.0
    )


def test_pooled_is_masked_mean_for_all_position_reads():
    rep = torch.arange(12.0).view(1, 3, 4)
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(pooled(rep, mask), rep[:, :2].mean(1))
    flat = torch.randn(2, 4)
    assert pooled(flat, mask) is flat


def test_state_mse_is_zero_for_equal_states_and_scale_free():
    torch.manual_seed(0)
    teacher, student = torch.randn(16, 8), torch.randn(16, 8)
    assert state_mse(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-7)
    base = state_mse(student, teacher).item()
    assert base > 0.5  # unrelated states: about 2 variances apart, divided by one
    assert state_mse(10 * student, 10 * teacher).item() == pytest.approx(
        base, rel=1e-5
    )  # variance-normalised
    _, parts = mux_loss(
        torch.randn(16, 2), student, teacher, torch.randn(16, 2), torch.zeros(16, dtype=torch.long),
        lambda_nce=0, lambda_kd=0, lambda_state=4.0,
    )  # fmt: skip
    ce = parts["ce"]
    assert parts["state"] == pytest.approx(base, rel=1e-5)
    assert parts["loss"] == pytest.approx(ce + 4.0 * base, rel=1e-5)


def test_teacher_targets_label_unlabeled_rows_by_the_teacher_never_by_gold():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, -1.0], [0.0, 1.0]])
    labels = torch.tensor([1, -1, -1, 0])  # rows 1 and 2 unlabeled
    assert teacher_targets(labels, logits).tolist() == [1, 1, 0, 0]  # gold where given, teacher's elsewhere
