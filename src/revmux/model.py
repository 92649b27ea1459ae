"""MuxModel: a frozen backbone plus a multiplexer.

prefill [0, k) per request -> mux groups of N -> tail [k, L) on composites -> demux only at the
positions the head reads -> frozen head. N = 1 is plain inference. The backbone is never a
submodule: `state_dict()` holds the adapters only, and `.train()` never wakes the backbone's dropout.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from revmux.backbones import BackboneView, LayerState, backbone_hash
from revmux.checkpoint import check_compatible, load_adapter_weights, resolve_backbone, save_adapter
from revmux.config import DEFAULT_K, DEFAULT_KIND, DEFAULT_MAX_LENGTH, DEFAULT_N, WEIGHTS_NAME, MuxConfig
from revmux.encoding import RequestEncoder
from revmux.errors import ConfigError
from revmux.mux import Multiplexer, build_mux, resolve_options
from revmux.prompting import PromptSpec, shared_prefix_mask
from revmux.runs import (
    BF16_MAX_RUNS,
    BF16_MIN_ROWS_PER_RUN,
    MAX_RUNS,
    MIN_ROWS_PER_RUN,
    PREFILL_MAX_RUNS,
    PREFILL_MIN_ROWS_PER_RUN,
    bucketed_runs,
    groups_by_length,
    pack_rows,
    plan_groups,
    real_ends,
    run_count,
    split_runs,
    token_index,
)

ADAPTER_PRECISIONS = ("auto", "backbone", "fp32")  # what MuxModel.adapter_precision takes


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether bf16 matmuls run natively on this kind of device: CUDA, or a CPU that oneDNN runs bf16 on
    (AVX512/AMX). Elsewhere (e.g. AVX2) they are emulated and slower than fp32."""
    if device_type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class MuxOutput:
    """logits (B, C) in input order; reps: what the head read (B, d) or (B, T, d); down: (G, N, T, d_sub) or None."""

    logits: Tensor
    reps: Tensor
    down: Tensor | None = None


class MuxModel(nn.Module):
    """Serve a frozen classifier N requests per forward pass (RevMUX); trainable parameters are the adapters only."""

    def __init__(self, view: BackboneView, config: MuxConfig, mux: Multiplexer | None = None) -> None:
        super().__init__()
        check_compatible(config, view, check_hash=False)
        self.__dict__["view"] = view  # not a submodule: frozen, never saved, never put in train mode
        self.config = config
        self.mux = (
            mux if mux is not None else build_mux(config.kind, config.n, config.hidden_size, **config.options)
        )
        # prefill and tail run in up to `max_runs` runs of at least `min_rows_per_run` requests, each cut
        # after its own last real column (revmux.runs); max_runs = 1 is one run over the padded batch.
        # None: the measured cut of `run_cut` (revmux.runs: PREFILL_* where the tail is packed, BF16_* for a
        # bf16 backbone's packed prefill, else MAX_RUNS / MIN_ROWS_PER_RUN)
        self.max_runs: int | None = None
        self.min_rows_per_run: int | None = None
        # the tail in one pass over every run's composites packed side by side, where the view allows it
        # (`packs_tail`); off: one tail pass per run, each padded to its longest composite
        self.pack_tail = True
        # without gradients on a bf16 backbone the adapters compute in bf16 with "backbone", and with "auto"
        # where bf16 matmuls are native (CUDA, or a CPU oneDNN runs bf16 on: emulated ones are slower than
        # fp32); "fp32": always in their own fp32 weights, the states cast to fp32 and back around them
        self.adapter_precision = "auto"
        self.__dict__["_twin"] = None  # (key, the adapters cast to the backbone's dtype), not a submodule

    @classmethod
    def from_backbone(
        cls,
        view: BackboneView,
        *,
        kind: str = DEFAULT_KIND,
        n: int = DEFAULT_N,
        k: int = DEFAULT_K,
        backbone_path: str | Path = "",
        task: str | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        options: Mapping[str, Any] | None = None,
        shared_prefix: bool | None = None,
        prompt: PromptSpec | dict[str, Any] | None = None,
    ) -> MuxModel:
        """Fresh adapters of `kind` for `view` at width N and split point k.

        `options` are the kind's knobs (`revmux.mux.resolve_options`; unset ones take the kind's defaults).
        `shared_prefix` None means automatic: on for causal decoders (where it is exact), off elsewhere.
        `prompt`: a prompted teacher's spec (revmux.prompting); saved with the adapter, applied by `encoder`.
        """
        if shared_prefix is None:
            shared_prefix = view.causal
        config = MuxConfig(
            kind=kind,
            n=n,
            k=k,
            hidden_size=view.hidden_size,
            num_layers=view.num_layers,
            backbone_model_type=view.model_type,
            backbone_path=str(backbone_path),
            backbone_hash=backbone_hash(view.model),
            label_names=view.label_names,
            verbalizer_ids=view.verbalizer_ids,
            options=resolve_options(kind, options) if n > 1 else {},
            shared_prefix=shared_prefix,
            max_length=max_length,
            task=task,
            prompt=(prompt if isinstance(prompt, dict) else prompt.to_dict()) if prompt is not None else None,
        )
        return cls(view, config)

    @property
    def encoder(self) -> RequestEncoder:
        """How raw inputs become this model's token ids: the config's prompt and max_length, the view's tokenizer."""
        return RequestEncoder.from_config(self.config, self.view.tokenizer)

    @property
    def n(self) -> int:
        return self.config.n

    @property
    def k(self) -> int:
        return self.config.k

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ---- inference ----------------------------------------------------------------------------
    def inference_mux(self) -> Multiplexer:
        """The multiplexer the forward computes with: `mux` itself, or, with no gradient recorded, a bf16
        backbone and `adapter_precision` "backbone" (or "auto" where bf16 is native), a copy of it cast to
        bf16 once (re-cast only when a weight changes): no state is cast around the adapters. `mux` itself
        is never cast."""
        if self.adapter_precision not in ADAPTER_PRECISIONS:
            raise ConfigError(
                f"adapter_precision must be one of {', '.join(ADAPTER_PRECISIONS)}, got {self.adapter_precision!r}."
            )
        dtype = self.view.dtype
        if self.adapter_precision == "fp32" or dtype != torch.bfloat16 or torch.is_grad_enabled():
            return self.mux
        if self.adapter_precision == "auto" and not native_bf16(self.view.device.type):
            return self.mux
        tensors = self.mux.state_dict(keep_vars=True).values()
        key = (dtype, tuple((t.data_ptr(), t._version, t.device) for t in tensors))
        twin = self.__dict__["_twin"]
        if twin is None or twin[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                twin = (key, copy.deepcopy(self.mux).to(dtype).requires_grad_(False).eval())
            self.__dict__["_twin"] = twin
        return twin[1]

    def prefill(self, inputs: Mapping[str, Tensor]) -> LayerState:
        """Embeddings and layers [0, k) on every request separately, exactly as the unsplit model."""
        state = self.view.embed(inputs)
        return self.view.run_layers(state, 0, self.k)

    def forward(
        self, inputs: Mapping[str, Tensor], *, order: Tensor | None = None, length_aware: bool = False
    ) -> Tensor:
        """Logits (B, C) in input order for a tokenized batch of any size B.

        The batch runs in runs of consecutive groups (see `run_count`), each prefilled, multiplexed, run
        through the tail, demultiplexed and read on its own, cut after its own last real column; the
        result equals one padded pass over the whole batch (`prefill` then `forward_from_prefill`).
        """
        mask = inputs.get("attention_mask")
        if self.n == 1 or mask is None or self.view.reads_all_positions:
            state, perm = self.prefill_grouped(inputs, order=order, length_aware=length_aware)
            return self.forward_from_prefill(state, order=perm, length_aware=length_aware).logits
        perm = plan_groups(mask.sum(1), self.n, length_aware=length_aware, order=order)
        return self._forward_runs(inputs, groups_by_length(perm, mask, self.n))

    def _forward_runs(self, inputs: Mapping[str, Tensor], perm: Tensor) -> Tensor:
        """`forward` run by run (whole groups of N in `perm` order; the B mod N leftovers join the last run
        and run unmultiplexed): no batch-wide padded buffer is built, gathered or scattered, and the
        adapters see only the columns the tail runs on."""
        mask = inputs["attention_mask"]
        B, T = mask.shape
        N = self.n
        reads: list[Tensor] = []  # per run, the tail's outputs at each request's read position
        rest: list[Tensor] = []
        packed = self.packs_tail
        muxed: list[tuple[Tensor, Tensor, Tensor]] = []  # packed: per run, the composites for one tail pass
        for rows, cols in bucketed_runs(mask, perm, self.run_count(B // N), group_size=N):
            sub = {key: _rows_cols(value, rows, cols.stop, B, T) for key, value in inputs.items()}
            state = self.prefill(sub)
            m = rows.shape[0] // N * N
            if m:
                masks = state.attention_mask[:m].unflatten(0, (m // N, N))  # (G, N, t)
                t = cols.stop if m == rows.shape[0] else int(real_ends(masks.amax(dim=1)).max())
                h = state.hidden[:m, :t].unflatten(0, (m // N, N))  # (G, N, t, d), no copy
                if packed:
                    muxed.append(self._mux(h, masks[..., :t]))
                else:
                    reads.append(self._mux_tail(h, masks[..., :t]))
            if m < rows.shape[0]:
                left = _select(state, torch.arange(m, rows.shape[0], device=mask.device))
                rest.append(
                    self.teacher_from_prefill(_cut(left, int(real_ends(left.attention_mask).max())))[1]
                )
        if muxed:
            reads = [self._packed_tail(muxed)]
        m = B // N * N
        logits = [self._demux_head(_cat(reads), mask[perm[:m]])[1]] if m else []
        return torch.cat(logits + rest)[_inverse(perm)]

    def prefill_grouped(
        self, inputs: Mapping[str, Tensor], *, order: Tensor | None = None, length_aware: bool = False
    ) -> tuple[LayerState, Tensor | None]:
        """The layer-k states `forward` mixes (rows in input order) and the grouping it then uses (None:
        `order`, else input order). Keep the states to re-run a request alone from layer k (`rerun_alone`)."""
        mask = inputs.get("attention_mask")
        if mask is None or self.run_count(mask.shape[0] // self.n if self.n > 1 else 0) == 1:
            return self.prefill(inputs), order
        perm = plan_groups(mask.sum(1), self.n, length_aware=length_aware, order=order)
        return self._prefill_runs(inputs, perm), perm

    def rerun_alone(self, state: LayerState, rows: Tensor) -> Tensor:
        """Logits (len(rows), C) of `rows` of a layer-k state run unmultiplexed: layers [k, L) only, exactly
        the unsplit model's answer (the confidence fallback reuses the prefill instead of redoing it). The rows
        run length-sorted, in runs cut after their own last real column, as the sorted plain model does."""
        mask = state.attention_mask[rows]
        if rows.numel() == 0:
            return self.teacher_from_prefill(_select(state, rows))[1]
        order = torch.argsort(real_ends(mask), descending=True, stable=True)
        parts = [
            (run, self.teacher_from_prefill(_cut(_select(state, rows[run]), cols.stop))[1])
            for run, cols in bucketed_runs(mask, order, self.run_count(rows.shape[0], group_size=1))
        ]
        logits = torch.cat([lg for _, lg in parts])
        return logits[_inverse(torch.cat([run for run, _ in parts]))]

    def run_count(self, groups: int, group_size: int | None = None) -> int:
        """How many runs the prefill and tail of `groups` composites (of `group_size` requests, default N)
        are split into (1: no split)."""
        if self.view.reads_all_positions:
            return 1
        size = self.n if group_size is None else group_size
        max_runs, min_rows = self.run_cut
        return run_count(groups, group_size=size, max_runs=max_runs, min_rows_per_run=min_rows)

    @property
    def run_cut(self) -> tuple[int, int]:
        """(max_runs, min_rows_per_run) in force: the attributes where set, else the measured cut (see
        `__init__`)."""
        if not self.packs_tail:
            max_runs, min_rows = MAX_RUNS, MIN_ROWS_PER_RUN
        elif self.view.dtype == torch.bfloat16:  # bf16 matmuls pay more for short runs than padding costs
            max_runs, min_rows = BF16_MAX_RUNS, BF16_MIN_ROWS_PER_RUN
        else:
            max_runs, min_rows = PREFILL_MAX_RUNS, PREFILL_MIN_ROWS_PER_RUN
        return (
            max_runs if self.max_runs is None else self.max_runs,
            min_rows if self.min_rows_per_run is None else self.min_rows_per_run,
        )

    def _prefill_runs(self, inputs: Mapping[str, Tensor], perm: Tensor) -> LayerState:
        """`prefill` in the tail's runs of groups (in `perm` order), each cut after its last real column.

        Columns past a run's cut are padding of every request in it: left as zeros, they are masked in the
        composite (OR of the group's masks) and never read, so the result equals one padded prefill.
        """
        state = self.view.embed(inputs)
        mask = state.attention_mask
        hidden = torch.zeros_like(state.hidden)
        runs = self.run_count(mask.shape[0] // self.n)
        by_length = groups_by_length(perm, mask, self.n)  # the same groups, runs of similar length
        for rows, cols in bucketed_runs(mask, by_length, runs, group_size=self.n):  # leftovers join the last
            out = self.view.run_layers(_cut(_select(state, rows), cols.stop), 0, self.k)
            hidden[rows, : cols.stop] = out.hidden
        return state.with_hidden(hidden)

    def forward_from_prefill(
        self,
        state: LayerState,
        *,
        order: Tensor | None = None,
        length_aware: bool = False,
        return_down: bool = False,
    ) -> MuxOutput:
        """Mux groups of N from layer-k states, run the tail once per group, demux, read the head.

        Groups are consecutive runs of N in `plan_groups`; the last B mod N requests run unmultiplexed
        (N = 1) rather than being padded with fake requests.
        """
        mask = state.attention_mask
        B, T = mask.shape
        N = self.n
        grouping = plan_groups(mask.sum(1), N, length_aware=length_aware, order=order)
        perm = groups_by_length(grouping, mask, N) if N > 1 else grouping  # runs of similar length
        G = B // N if N > 1 else 0
        m = G * N
        reads: list[Tensor] = []
        logits: list[Tensor] = []
        down = None
        if G:
            idx = perm[:m].view(G, N)
            runs = []
            packed = self.packs_tail
            muxed: list[tuple[Tensor, Tensor, Tensor]] = []
            for chunk in split_runs(torch.arange(G, device=mask.device), self.run_count(G)):
                masks = mask[idx[chunk]]  # (g, N, T)
                t = T if self.view.reads_all_positions else int(real_ends(masks.amax(dim=1)).max())
                h = state.hidden[:, :t][idx[chunk]]  # (g, N, t, d): only the run's real columns
                if packed:
                    muxed.append(self._mux(h, masks[..., :t]))
                else:
                    runs.append(self._mux_tail(h, masks[..., :t]))
            if muxed:
                runs = [self._packed_tail(muxed)]
            rep, lg = self._demux_head(_cat(runs), mask[perm[:m]])
            reads.append(rep)
            logits.append(lg)
            if return_down:
                down = self.mux.down(state.hidden[grouping[:m].view(G, N)])  # groups in `order`'s order
        rest = perm[m:]
        if rest.numel():
            rep, lg = self.teacher_from_prefill(_select(state, rest))
            reads.append(rep)
            logits.append(lg)
        inverse = _inverse(perm)
        return MuxOutput(logits=torch.cat(logits)[inverse], reps=torch.cat(reads)[inverse], down=down)

    @property
    def packs_tail(self) -> bool:
        """Whether `forward` runs the tail once over all its runs' composites packed side by side
        (`revmux.runs.pack_rows`) instead of once per run: where `pack_tail` is on and the view packs rows
        (encoders, `EncoderView.packs_rows`), the head reads one position, and no prefix is shared."""
        view = self.view
        return (
            self.pack_tail
            and view.packs_rows
            and not view.reads_all_positions
            and not self.config.shared_prefix
        )

    def _mux(self, h: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Whole groups, (G, N, T, d) layer-k states and (G, N, T) masks, muxed: (composites (G, T, d), their
        masks (G, T), the OR of the group's, and each request's read position (G, N))."""
        G, N, T = masks.shape
        comp = self.inference_mux().mux(h)
        ridx = self.view.read_index(masks.reshape(G * N, T)).view(G, N)
        if self.config.shared_prefix:
            shared = shared_prefix_mask(h, masks, ridx.amin(dim=1))
            comp = torch.where(shared.unsqueeze(-1), h[:, 0].to(comp.dtype), comp)
        return comp, masks.amax(dim=1), ridx

    def _mux_tail(self, h: Tensor, masks: Tensor) -> Tensor:
        """Whole groups, (G, N, T, d) layer-k states and (G, N, T) masks, muxed and run through the tail: the
        composite outputs at each request's read position(s), (G, N, [T,] d), for `_demux_head`."""
        G, N, T = masks.shape
        if self.view.reads_all_positions:
            out = self._tail(self.inference_mux().mux(h), masks.amax(dim=1))
            return out.unsqueeze(1).expand(G, N, *out.shape[1:])
        comp, comp_mask, ridx = self._mux(h, masks)
        out = self._tail(comp, comp_mask)  # (G, T, d)
        return out[torch.arange(G, device=out.device).unsqueeze(1), ridx]  # (G, N, d)

    def _packed_tail(self, muxed: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        """`_mux`'s composites of every run through the tail in one pass, packed side by side: the outputs
        at each request's read position, (G, N, d) over all runs in order, as `_mux_tail` gives them."""
        lengths = torch.cat([real_ends(comp_mask) for _, comp_mask, _ in muxed]).long()
        plan = pack_rows(lengths)
        d = muxed[0][0].shape[-1]
        buffer = muxed[0][0].new_zeros(plan.segments.numel(), d)
        slots, start = plan.slots, 0
        for comp, _, _ in muxed:  # each run's real tokens into their place in the packed buffer
            rows, tokens = token_index(lengths[start : start + comp.shape[0]])
            buffer[slots[start + rows] + tokens] = comp[rows, tokens]
            start += comp.shape[0]
        out = self.view.run_packed(
            buffer.view(*plan.segments.shape, d), plan.segments, self.k, self.view.num_layers
        )
        reads = [ridx for _, _, ridx in muxed]
        at = slots.unsqueeze(1) + torch.cat(reads)  # (G, N): each request's read position in the buffer
        return out.view(-1, d)[at]

    def _demux_head(self, rows: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """`_mux_tail`'s outputs of all runs at once (G, N, [T,] d), with the requests' (G * N, T) masks,
        demuxed and read by the head: (what each head read (G * N, [T,] d), logits (G * N, C))."""
        per_request = self.inference_mux().demux(rows).flatten(0, 1)
        return per_request, self.view.head(per_request, masks)

    def _tail(self, comp: Tensor, comp_mask: Tensor) -> Tensor:
        """Layers [k, L) on composites (G, T, d) with their (G, T) masks, in one run: (G, T, d)."""
        state = self.view.composite_state(comp, comp_mask)
        return self.view.run_layers(state, self.k, self.view.num_layers).hidden

    def teacher_from_prefill(self, state: LayerState) -> tuple[Tensor, Tensor]:
        """The unmultiplexed model from layer k: (what the head reads, logits). The teacher of training."""
        return self.view.complete(state, self.k)

    # ---- checkpoints (the file format: revmux.checkpoint) -----------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write mux_config.json + mux_model.safetensors (adapters only, never the backbone), atomically."""
        return save_adapter(directory, self.config, self.mux)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        view: BackboneView | None = None,
        *,
        backbone: str | Path | None = None,
        check_hash: bool = True,
        dtype: torch.dtype | None = None,
    ) -> MuxModel:
        """Load adapters from `directory` onto `view` (or the backbone named in the config, or `backbone`).

        Raises CheckpointError when the files are missing, truncated or corrupted, or when the
        backbone differs from the one the adapters were trained on. `dtype` (e.g. torch.bfloat16) casts
        the backbone after its hash is checked; the adapters' weights stay fp32 (`inference_mux`).
        """
        config = MuxConfig.load(directory)
        view = resolve_backbone(
            config, directory, view, backbone=backbone, check_hash=check_hash, dtype=dtype
        )
        model = cls(view, config)
        model.mux.load_state_dict(load_adapter_weights(Path(directory) / WEIGHTS_NAME, model.mux))
        return model


def _select(state: LayerState, rows: Tensor) -> LayerState:
    pos = state.position_ids
    if pos is not None and pos.shape[0] == state.hidden.shape[0]:
        pos = pos[rows]
    return LayerState(hidden=state.hidden[rows], attention_mask=state.attention_mask[rows], position_ids=pos)


def _cat(parts: list[Tensor]) -> Tensor:
    """`torch.cat(parts)`, without a copy when there is one part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _inverse(perm: Tensor) -> Tensor:
    """The inverse permutation of `perm`."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.shape[0], device=perm.device)
    return inverse


def _rows_cols(value: Tensor, rows: Tensor, stop: int, B: int, T: int) -> Tensor:
    """`rows` of an input tensor, and its first `stop` columns when it is (B, T, ...) like the mask."""
    if not isinstance(value, Tensor) or value.dim() == 0 or value.shape[0] != B:
        return value
    if value.dim() >= 2 and value.shape[1] == T:
        return value[rows, :stop]
    return value[rows]


def _cut(state: LayerState, t: int) -> LayerState:
    """The first `t` columns of `state` (trailing padding dropped)."""
    pos = state.position_ids
    return LayerState(
        hidden=state.hidden[:, :t],
        attention_mask=state.attention_mask[:, :t],
        position_ids=None if pos is None else pos[:, :t],
    )
