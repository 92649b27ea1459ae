"""The adapter-training losses of docs/method.md section 4: CE + InfoNCE + KD + dense state distillation
+ the group cosine penalty.

What it is: pure functions on tensors (student outputs vs. the frozen teacher's and the gold labels).
What it is not: a training loop, or anything that knows about backbones, caches or checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from revmux.runs import masked_mean


def info_nce(student: Tensor, teacher: Tensor, scale: float = 20.0) -> Tensor:
    """InfoNCE of student reps (B, d) against teacher reps (B, d): cosine similarity * `scale`,
    the other rows of the batch as negatives, target = the same row (the diagonal)."""
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    logits = scale * s @ t.T  # (B, B)
    return F.cross_entropy(logits, torch.arange(s.shape[0], device=s.device))


def centred(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Student and teacher reps (B, d), both minus the teacher reps' mean over the batch (a constant to the
    student's gradient): what tells rows apart where every final state shares one large direction."""
    mean = teacher.float().mean(dim=0, keepdim=True).detach()
    return student.float() - mean, teacher.float() - mean


def kd_kl(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) on softmax(logits / temperature), mean over the batch, times temperature^2."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def state_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """Dense distillation: MSE between the student's and the teacher's final states at the read positions
    (B, d), divided by the variance of the teacher's (so the term's scale does not depend on the backbone)."""
    t = teacher.float()
    return F.mse_loss(student.float(), t) / t.var().detach().clamp_min(1e-6)


def teacher_targets(labels: Tensor, teacher_logits: Tensor) -> Tensor:
    """The CE targets: gold `labels`, with UNLABELED rows (-1) taking the teacher's prediction."""
    return torch.where(labels < 0, teacher_logits.argmax(-1), labels)


def group_cos_penalty(down: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean |cos(x_i, x_j)| over the pairs i < j of each group, compared position by position.

    down: (G, N, T, d_sub) down-projected requests; mask: optional (G, N, T), 1 for real tokens.
    Per-position vectors are compared because the composite mixes the N requests position by
    position: what interferes at position t is x_i[t] with x_j[t]. With `mask`, a pair counts at t
    only where both requests have a real token. Pairs are enumerated directly (triu indices), not
    through a sign mask. N = 1 (no pairs) gives 0.
    """
    G, N = down.shape[:2]
    if N < 2:
        return down.new_zeros(())
    x = F.normalize(down.float(), dim=-1)
    i, j = torch.triu_indices(N, N, offset=1, device=down.device)
    cos = (x[:, i] * x[:, j]).sum(-1).abs()  # (G, P, T)
    if mask is None:
        return cos.mean()
    m = mask.to(cos.dtype)
    weight = m[:, i] * m[:, j]
    return (cos * weight).sum() / weight.sum().clamp_min(1.0)


def pooled(rep: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, d) as is; (B, T, d) -> masked mean over real tokens (B, d), for heads that read every position."""
    return rep if rep.dim() == 2 else masked_mean(rep, attention_mask)


def mux_loss(
    student_logits: Tensor,
    student_reps: Tensor,
    teacher_reps: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    down: Tensor | None = None,
    down_mask: Tensor | None = None,
    lambda_nce: float = 0.25,
    lambda_kd: float = 1.0,
    lambda_cos: float = 0.0,
    lambda_state: float = 0.0,
    nce_scale: float = 20.0,
    nce_centre: bool = False,
    temperature: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """CE + lambda_nce * InfoNCE + lambda_kd * KL + lambda_state * state MSE + lambda_cos * cos:
    (total, {"loss", "ce", "nce", "kd", "state", "cos"}).

    Terms whose lambda is 0 are not computed (reported as 0.0); the cos term also needs `down`
    (kinds without a Down projection, like datamux, have none). `nce_centre`: InfoNCE on both reps minus the
    mean of the batch's teacher reps (`centred`).
    """
    ce = F.cross_entropy(student_logits.float(), labels)
    total = ce
    parts = {"ce": float(ce.detach()), "nce": 0.0, "kd": 0.0, "state": 0.0, "cos": 0.0}
    if lambda_nce:
        s_reps, t_reps = centred(student_reps, teacher_reps) if nce_centre else (student_reps, teacher_reps)
        nce = info_nce(s_reps, t_reps, scale=nce_scale)
        total = total + lambda_nce * nce
        parts["nce"] = float(nce.detach())
    if lambda_kd:
        kd = kd_kl(teacher_logits, student_logits, temperature=temperature)
        total = total + lambda_kd * kd
        parts["kd"] = float(kd.detach())
    if lambda_state:
        mse = state_mse(student_reps, teacher_reps)
        total = total + lambda_state * mse
        parts["state"] = float(mse.detach())
    if lambda_cos and down is not None:
        cos = group_cos_penalty(down, down_mask)
        total = total + lambda_cos * cos
        parts["cos"] = float(cos.detach())
    parts["loss"] = float(total.detach())
    return total, parts
