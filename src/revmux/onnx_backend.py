"""ONNX Runtime: the plain classifier as a baseline, and the backbone layers under a multiplexed model.

What it is: `ort_classifiers(view, workdir)` exports a view's Hugging Face classifier once (torch.onnx,
TorchScript exporter, dynamic batch and sequence axes) into `workdir`, makes an int8 copy with
`onnxruntime.quantization.quantize_dynamic`, and returns an `OrtClassifier` per precision: what a user who
wants a faster CPU classifier would deploy instead of revmux. `ort_view(view, workdir, k)` exports the
layer ranges [0, k) and [k, L) as graphs and returns a view whose `run_layers` runs them on ONNX Runtime
(fp32 or int8), so that `MuxModel` on it keeps its own grouping, runs and adapters (in torch, fp32) while
the prefill and the tail run on ONNX Runtime. Where the view packs rows (`EncoderView.packs_rows`), the
tail graph takes packed rows and their segment ids instead of a padding mask, so the mux runs its tail once
over all its composites packed side by side, as it does in torch. `ort_unavailable(view)` says in words why a
view cannot take these paths (onnxruntime not installed, an LM head or a decoder), or None. What it is not: a general
exporter: only encoder classifiers read through their own head are exported. onnxruntime is imported here
and nowhere else.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from revmux.errors import ConfigError

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
    workdir.mkdir(parents=True, exist_ok=True)
    fp32 = export_classifier(view, workdir / "classifier.onnx", names)
    int8 = quantize_int8(fp32, workdir / "classifier-int8.onnx")
    return {"fp32": OrtClassifier(fp32, threads), "int8": OrtClassifier(int8, threads)}


# ---- the backbone layers of a multiplexed model -------------------------------------------------------
class _Layers(nn.Module):
    """Layers [start, stop) of a view on (hidden (B, T, d), attention_mask (B, T)), or with `packed` on (hidden,
    segments (B, T)): rows of several sequences side by side (`BackboneView.run_packed`). What gets exported."""

    def __init__(self, view: Any, start: int, stop: int, packed: bool = False) -> None:
        super().__init__()
        self.model = view.model  # registered, so that the export sees the layers' weights as parameters
        self.__dict__["view"] = view
        self.start, self.stop, self.packed = start, stop, packed

    def forward(self, hidden: Tensor, mask_or_segments: Tensor) -> Tensor:
        if self.packed:
            return self.view.run_packed(hidden, mask_or_segments, self.start, self.stop)
        state = self.view.composite_state(hidden, mask_or_segments)
        return self.view.run_layers(state, self.start, self.stop).hidden


def export_layers(view: Any, start: int, stop: int, path: str | Path, packed: bool = False) -> Path:
    """Export layers [start, stop) of `view` (inputs hidden and attention_mask, dynamic B and T) to `path`; with
    `packed` (a view that packs rows) the second input is segment ids instead (`BackboneView.run_packed`).

    The trace runs on two rows with padding (packed: one of them holding two sequences), so the mask is part of
    the graph.
    """
    path = Path(path)
    hidden = torch.randn(2, 8, view.hidden_size, generator=torch.Generator().manual_seed(0))
    if packed:
        second, name = torch.tensor([[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 1, 0, 0, 0]]), "segments"
    else:
        second, name = torch.tensor([[1] * 8, [1] * 5 + [0] * 3]), "attention_mask"
    axes = {axis: {0: "batch", 1: "sequence"} for axis in ("hidden", name, "out")}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Layers(view, start, stop, packed).eval(),
                (hidden, second),
                str(path),
                input_names=["hidden", name],
                output_names=["out"],
                dynamic_axes=axes,
                dynamo=False,
            )
    finally:
        view.model.eval()
    return path


class OrtLayers:
    """An onnxruntime session over exported layers: hidden states and a padding mask (or, for a packed graph,
    segment ids) in, hidden states out (torch tensors)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.session = OrtClassifier(path, threads).session
        self.second = self.session.get_inputs()[1].name  # "attention_mask", or "segments" for packed rows

    def __call__(self, hidden: Tensor, mask_or_segments: Tensor) -> Tensor:
        feeds = {
            "hidden": hidden.detach().float().contiguous().cpu().numpy(),
            self.second: mask_or_segments.detach().cpu().numpy().astype(np.int64),
        }
        return torch.from_numpy(self.session.run(["out"], feeds)[0])


def ort_view(
    view: Any, workdir: str | Path, k: int, precision: str = "fp32", threads: int | None = None
) -> Any:
    """A shallow copy of `view` (same model, tokenizer and head) whose layers [0, k) and [k, L) run on ONNX
    Runtime, in fp32 or int8; any other layer range still runs in torch. ConfigError when it cannot."""
    reason = ort_unavailable(view)
    if reason is None and view.dtype != torch.float32:
        reason = f"the backbone is {str(view.dtype).removeprefix('torch.')}; the export starts from fp32"
    if reason is None and precision not in ORT_PRECISIONS:
        reason = f"precision must be one of {', '.join(ORT_PRECISIONS)}, got {precision!r}"
    if reason is not None:
        raise ConfigError(f"--backend onnx cannot run here: {reason}.")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tail = (k, view.num_layers)
    packs = view.packs_rows  # the tail graph takes packed rows (a padded row is one sequence and padding)
    sessions: dict[tuple[int, int], OrtLayers] = {}
    for start, stop in ((0, k), tail):
        if start == stop:
            continue
        packed = packs and (start, stop) == tail
        name = f"layers-{start}-{stop}{'-packed' if packed else ''}.onnx"
        path = export_layers(view, start, stop, workdir / name, packed)
        if precision == "int8":
            path = quantize_int8(path, path.with_name(path.stem + "-int8.onnx"))
        sessions[(start, stop)] = OrtLayers(path, threads)
    other = copy.copy(view)
    torch_layers, torch_packed = view.run_layers, view.run_packed

    def run_layers(state: Any, start: int, stop: int) -> Any:
        session = sessions.get((start, stop))
        if session is None:
            return torch_layers(state, start, stop)
        # a packed graph reads the padding mask as segment ids: real tokens 1, padding 0
        return state.with_hidden(session(state.hidden, state.attention_mask))

    def run_packed(hidden: Tensor, segments: Tensor, start: int, stop: int) -> Tensor:
        session = sessions.get((start, stop)) if (start, stop) == tail else None
        if session is None:
            return torch_packed(hidden, segments, start, stop)
        return session(hidden, segments)

    other.run_layers, other.run_packed = run_layers, run_packed
    other.layers_elsewhere = True
    other.packs_elsewhere = packs and tail in sessions  # the mux's tail over packed composites on ORT
    return other
