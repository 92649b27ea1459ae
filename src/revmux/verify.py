"""`revmux verify`: the checks a user runs first on their own backbone.

1. split == unsplit: embed -> [0, k) -> [k, L) -> head equals the model's own forward, for every k.
2. mux inverse: for each N, the reversible demultiplexer inverts the multiplexer exactly on this
   backbone's real layer-k states (identity tail). It runs in float64: decoder LLMs' layer-k states reach
   magnitudes of 1e4 (SmolLM2 at its first token), where fp32 round-off alone exceeds 1e-5.
It checks the method's arithmetic on this model; it says nothing about accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from revmux.backbones import BackboneView
from revmux.data import model_inputs
from revmux.mux import RevMUX

SAMPLE_SENTENCES = (
    "A gripping, beautifully shot film.",
    "The plot never comes together, and the two leads seem bored by their own lines for most of its length.",
    "Fine.",
    "It is not the best thing the director has made, but the final act earns every minute that came before it.",
    "An unexpected delight.",
    "Too long by half.",
)


@dataclass
class VerifyReport:
    """Errors of both checks; `ok` when every error is within `tolerance`."""

    model_type: str
    num_layers: int
    hidden_size: int
    tolerance: float
    split_errors: dict[int, float] = field(default_factory=dict)
    inverse_errors: dict[int, float] = field(default_factory=dict)

    @property
    def max_abs_error_split(self) -> float:
        return max(self.split_errors.values(), default=0.0)

    @property
    def max_abs_error_inverse(self) -> float:
        return max(self.inverse_errors.values(), default=0.0)

    @property
    def ok(self) -> bool:
        return self.max_abs_error_split <= self.tolerance and self.max_abs_error_inverse <= self.tolerance

    def to_dict(self) -> dict:
        d = asdict(self)
        d["split_errors"] = {str(k): v for k, v in self.split_errors.items()}
        d["inverse_errors"] = {str(k): v for k, v in self.inverse_errors.items()}
        d.update(
            max_abs_error_split=self.max_abs_error_split,
            max_abs_error_inverse=self.max_abs_error_inverse,
            ok=self.ok,
        )
        return d


def sample_inputs(view: BackboneView, texts: Sequence[str] = SAMPLE_SENTENCES) -> dict[str, torch.Tensor]:
    """Tokenized, padded batch of `texts` of mixed lengths."""
    if view.tokenizer is None:
        raise ValueError("the view has no tokenizer; load it with revmux.backbones.load_backbone")
    enc = view.tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
    return {k: v.to(view.device) for k, v in model_inputs(enc).items()}


@torch.inference_mode()
def verify_backbone(
    view: BackboneView, ns: Sequence[int] = (2, 4, 8), tolerance: float = 1e-5, seed: int = 0
) -> VerifyReport:
    """Run both checks on `view`; see the module docstring."""
    inputs = sample_inputs(view)
    report = VerifyReport(view.model_type, view.num_layers, view.hidden_size, tolerance)
    reference = view.forward_unsplit(inputs).float()
    for k in range(view.num_layers + 1):
        split = view.forward_split(inputs, k).float()
        report.split_errors[k] = float((split - reference).abs().max())

    k_mid = view.num_layers // 2
    state = view.run_layers(view.embed(inputs), 0, k_mid)
    hidden = state.hidden.double()
    B, T, d = hidden.shape
    gen = torch.Generator().manual_seed(seed)
    for n in ns:
        torch.manual_seed(seed + n)
        mux = RevMUX(n, d).double()
        for (
            module
        ) in mux.modules():  # standard (non-zero) init everywhere: a near-identity F would prove little
            if isinstance(module, torch.nn.Linear):
                module.reset_parameters()
        groups = 2
        rows = torch.randint(0, B, (groups * n,), generator=gen)
        h = hidden[rows].view(groups, n, T, d)
        x = mux.down(h)
        x_hat = mux.invert(mux.mux(h))
        report.inverse_errors[n] = float((x_hat - x).abs().max())
    return report
