"""ONNX Runtime baselines: the plain classifier exported with torch.onnx and run by onnxruntime, fp32 or int8.

What it is: `ort_classifiers(view, workdir)` exports a view's Hugging Face classifier once (torch.onnx,
TorchScript exporter, dynamic batch and sequence axes) into `workdir`, makes an int8 copy with
`onnxruntime.quantization.quantize_dynamic`, and returns an `OrtClassifier` per precision: what a user who
wants a faster CPU classifier would deploy instead of revmux. `ort_unavailable(view)` says in words why a
view cannot take this path (onnxruntime not installed, an LM head or a decoder), or None. What it is not:
a multiplexed model on ONNX Runtime (the adapters run in torch), or a general exporter: only encoder
classifiers read through their own head are exported. onnxruntime is imported here and nowhere else.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # in the order the export takes them
ORT_PRECISIONS = ("fp32", "int8")


def ort_unavailable(view: Any) -> str | None:
    """Why `view` cannot be exported and run on ONNX Runtime here, in words; None when it can."""
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "onnxruntime is not installed (pip install 'revmux[onnx]')"
    if view.verbalizer_ids is not None or view.causal or view.reads_all_positions:
        return f"the ONNX export covers encoder classifiers only, not {view.model_type} with this head"
    if view.device.type != "cpu":
        return f"ONNX Runtime baselines run on CPU, the backbone is on {view.device}"
    return None


class _Logits(nn.Module):
    """The classifier with positional inputs and the logits as its only output (what gets exported)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(**dict(zip(self.names, inputs, strict=True))).logits


def export_classifier(view: Any, path: str | Path, names: tuple[str, ...]) -> Path:
    """Export `view.model` (inputs `names`, output "logits", dynamic B and T) to `path`; the model stays in eval.

    The trace runs on a padded two-row batch, so the attention mask is part of the graph.
    """
    path = Path(path)
    example = view.tokenizer(["a short example request", "a"], padding=True, return_tensors="pt")
    example = tuple(example[name] for name in names)
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    wrapper = _Logits(view.model, names).eval()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # trace warnings about shape-dependent Python branches
            torch.onnx.export(
                wrapper,
                example,
                str(path),
                input_names=list(names),
                output_names=["logits"],
                dynamic_axes=axes | {"logits": {0: "batch"}},
                dynamo=False,
            )
    finally:
        view.model.eval()
    return path


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """An int8 copy of the ONNX model at `src` (onnxruntime dynamic quantization, int8 weights) at `dst`."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs a pre-processing suggestion on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return Path(dst)


class OrtClassifier:
    """An onnxruntime session over an exported classifier: logits (B, C) as numpy for a batch of tensors."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # no busy-waiting threads after a run: they would steal the cores of the torch variants timed next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = tuple(i.name for i in self.session.get_inputs())

    def feeds(self, batch: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
        """The session's inputs from a tokenized batch (int64 numpy arrays), prepared outside any timing."""
        return {name: batch[name].detach().cpu().numpy().astype(np.int64) for name in self.input_names}

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits (B, C) for prepared `feeds`."""
        return self.session.run(["logits"], dict(feeds))[0]

    def __call__(self, batch: Mapping[str, Tensor]) -> np.ndarray:
        return self.run(self.feeds(batch))


def ort_classifiers(
    view: Any, workdir: str | Path, names: tuple[str, ...], threads: int | None = None
) -> dict[str, OrtClassifier]:
    """{"fp32": ..., "int8": ...}: `view`'s classifier exported once into `workdir` and its int8 copy."""
    workdir = Path(workdir)
    fp32 = export_classifier(view, workdir / "classifier.onnx", names)
    int8 = quantize_int8(fp32, workdir / "classifier-int8.onnx")
    return {"fp32": OrtClassifier(fp32, threads), "int8": OrtClassifier(int8, threads)}
