"""The runner: owns the models of an adapter pack on one device and executes the batcher's steps.

What it is: `ModelRunner.tokenize` turns one input into token ids at admission with the pack's
`RequestEncoder` (prompt, max_length, truncation; its failures are that input's alone), and `ModelRunner.run(groups)` runs one step: per width N, the step's groups of N
are collated into one padded batch (consecutive runs of N are the composites) and run through the
MuxModel of width N, or the teacher's own forward for N = 1, length-sorted in runs cut after their
last real column (`revmux.runs.plain_runs`), as the plain model is best served. The batch contract is checked loudly:
exactly one output per request id, else only the requests concerned fail; if a whole width fails,
each of its requests is retried alone at N = 1 so one bad input fails alone. Confidence fallback:
a multiplexed answer whose top-1 minus top-2 probability is below `fallback_margin` is re-run at
N = 1 and flagged (at most `fallback_max_per_step` per step, lowest margins first; an answer whose
re-run failed or was capped keeps its multiplexed logits and is flagged `fallback_failed`). With
`debug`, an output carries the sha256 of its own request's token ids, taken when the request was
admitted: it tells a client which input the server answered (what it tokenized), not more; that no
answer is swapped by the demux is tested under load against N = 1 answers (tests/serve/test_load.py).
What it is not: a scheduler (batcher.py decides what runs together) or thread-safe for concurrent
`run` calls (the engine runs one step at a time, in its worker thread).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from revmux.errors import ConfigError, InputError
from revmux.runs import plain_runs
from revmux.serve.batcher import Group, Request
from revmux.serve.contract import Encoded, Output, token_hash
from revmux.serve.errors import RunnerContractError, TokenizationError
from revmux.serve.pack import AdapterPack


def prob_margin(logits: Sequence[float]) -> float:
    """Top-1 minus top-2 softmax probability (1.0 with a single label)."""
    if len(logits) < 2:
        return 1.0
    top = max(logits)
    exps = sorted((math.exp(x - top) for x in logits), reverse=True)
    return (exps[0] - exps[1]) / sum(exps)


class ModelRunner:
    """Runs steps of groups on the pack's models (see the module docstring)."""

    def __init__(
        self,
        pack: AdapterPack,
        *,
        max_length: int | None = None,
        fallback_margin: float = 0.0,
        fallback_max_per_step: int | None = None,
        widths: Sequence[int] | None = None,
        threads: int | None = None,
    ) -> None:
        self.pack = pack
        self.view = pack.view
        self.tokenizer = pack.view.tokenizer
        if self.tokenizer is None:
            raise InputError("the backbone has no tokenizer; load it with load_backbone(path).")
        self.encoder = pack.encoder if not max_length else pack.encoder.replace(max_length=max_length)
        self.max_length = self.encoder.max_length
        self.fallback_margin = fallback_margin
        self.fallback_max_per_step = fallback_max_per_step
        self.fallbacks_failed = 0
        self._states: dict[int, Any] = {}  # width -> the current step's layer-k states
        self._rows: dict[int, tuple[int, int]] = {}  # request id -> (width, row in that state)
        self.label_names = pack.label_names
        self.widths = pack.widths if widths is None else _select_widths(pack.widths, widths)
        self.fallbacks = 0
        if threads:
            torch.set_num_threads(threads)
        self._pad_id = self.tokenizer.pad_token_id or 0

    # ---- admission ------------------------------------------------------------------------------
    def tokenize(
        self, text: str, pair: str | None = None, *, truncate: bool = True, debug: bool = False
    ) -> Encoded:
        """Token ids of one input; InputError when too long and not truncated, TokenizationError on failure."""
        try:
            enc = self.encoder.encode_one(text, pair, truncation=truncate)  # the adapters' prompt, if any
        except InputError as exc:
            raise InputError(f'{exc} In a request, send "truncate": true.') from exc
        except Exception as exc:  # tokenizers raise assorted types; the input fails alone
            raise TokenizationError(f"the tokenizer failed on this input ({type(exc).__name__}).") from exc
        ids = enc["input_ids"]
        return Encoded(ids, enc.get("token_type_ids"), debug, token_hash(ids) if debug else None)

    # ---- one step -------------------------------------------------------------------------------
    def run(self, groups: Sequence[Group]) -> dict[int, Output | BaseException]:
        """Outputs (or the error) per request id for every request of `groups`."""
        by_width: dict[int, list[Request]] = {}
        for g in groups:
            if len(g.requests) != g.width:
                raise RunnerContractError(f"a group of width {g.width} holds {len(g.requests)} requests.")
            by_width.setdefault(g.width, []).extend(g.requests)
        results: dict[int, Output | BaseException] = {}
        self._states: dict[int, Any] = {}  # width -> this step's layer-k states, for the fallback
        self._rows: dict[int, tuple[int, int]] = {}  # request id -> (width, row in that state)
        for width, reqs in by_width.items():
            try:
                results |= self._run_width(width, reqs)
            except Exception:  # isolate: each request alone at N = 1, so a bad one fails alone
                for req in reqs:
                    try:
                        results |= self._run_width(1, [req])
                    except Exception as exc:
                        results[req.id] = exc
        if self.fallback_margin > 0:
            self._fall_back(groups, results)
        return results

    def _run_width(self, width: int, reqs: list[Request]) -> dict[int, Output]:
        logits = self._forward(width, [r.payload for r in reqs])
        if len(logits) != len(reqs):
            raise RunnerContractError(
                f"the width-{width} forward returned {len(logits)} rows for {len(reqs)} requests."
            )
        if width > 1:
            self._rows.update({r.id: (width, i) for i, r in enumerate(reqs)})
        return {
            r.id: Output(row, width, False, r.payload.input_hash) for r, row in zip(reqs, logits, strict=True)
        }

    def _fall_back(self, groups: Sequence[Group], results: dict[int, Output | BaseException]) -> None:
        """Re-run at N = 1 the multiplexed answers whose probability margin is below the threshold."""
        margins = {
            r.id: prob_margin(out.logits)
            for g in groups
            if g.width > 1
            for r in g.requests
            if isinstance(out := results.get(r.id), Output)
        }
        low = sorted((m, rid) for rid, m in margins.items() if m < self.fallback_margin)
        cap = len(low) if self.fallback_max_per_step is None else self.fallback_max_per_step
        by_id = {r.id: r for g in groups for r in g.requests}
        rerun, capped = [by_id[rid] for _, rid in low[:cap]], [rid for _, rid in low[cap:]]
        redone: dict[int, Output] = {}
        if rerun:
            try:
                redone = self._rerun_alone(rerun)
            except Exception:  # keep the multiplexed answers rather than fail them, but say so
                redone = {}
        for rid, out in redone.items():
            out.fallback = True
            results[rid] = out
        failed = [r.id for r in rerun if r.id not in redone] + capped
        for rid in failed:
            results[rid].fallback_failed = True  # type: ignore[union-attr]
        self.fallbacks += len(redone)
        self.fallbacks_failed += len(failed)

    @torch.inference_mode()
    def _rerun_alone(self, reqs: list[Request]) -> dict[int, Output]:
        """N = 1 answers of multiplexed requests from the layer-k states their step already computed:
        only layers [k, L) run again."""
        out: dict[int, Output] = {}
        by_width: dict[int, list[Request]] = {}
        for r in reqs:
            by_width.setdefault(self._rows[r.id][0], []).append(r)
        for width, group in by_width.items():
            rows = torch.tensor([self._rows[r.id][1] for r in group], device=self.view.device)
            logits = self.pack.models[width].rerun_alone(self._states[width], rows).float().cpu().tolist()
            out |= {
                r.id: Output(row, 1, False, r.payload.input_hash)
                for r, row in zip(group, logits, strict=True)
            }
        return out

    @torch.inference_mode()
    def _forward(self, width: int, encs: list[Encoded]) -> list[list[float]]:
        """Logits rows for a batch whose consecutive runs of `width` are the composites."""
        B, T = len(encs), max(e.n_tokens for e in encs)
        ids = torch.full((B, T), self._pad_id, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        types = torch.zeros((B, T), dtype=torch.long)
        for i, e in enumerate(encs):
            ids[i, : e.n_tokens] = torch.tensor(e.input_ids)
            mask[i, : e.n_tokens] = 1
            if e.token_type_ids is not None:
                types[i, : e.n_tokens] = torch.tensor(e.token_type_ids)
        device = self.view.device
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if any(e.token_type_ids is not None for e in encs):
            inputs["token_type_ids"] = types.to(device)
        if width == 1:
            logits = self._forward_sorted(inputs)
        else:
            model = self.pack.models[width]
            state, perm = model.prefill_grouped(inputs, order=torch.arange(B, device=device))
            self._states[width] = state
            logits = model.forward_from_prefill(state, order=perm).logits
        return logits.float().cpu().tolist()

    def _forward_sorted(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher alone on a batch, length-sorted in runs cut after their last real column
        (`revmux.runs.plain_runs`), as a user would serve the plain model: logits in batch order."""
        mask = inputs["attention_mask"]
        cuts = plain_runs(mask)
        if len(cuts) == 1 and cuts[0][1].stop == mask.shape[1]:
            return self.view.forward_unsplit(inputs)
        parts = [
            self.view.forward_unsplit({k: v[rows][:, cols] for k, v in inputs.items()}) for rows, cols in cuts
        ]
        logits = torch.empty((mask.shape[0], parts[0].shape[1]), dtype=parts[0].dtype, device=parts[0].device)
        logits[torch.cat([rows for rows, _ in cuts])] = torch.cat(parts)
        return logits

    def warmup(self) -> None:
        """One tiny forward per width, so the first requests do not pay for lazy initialization."""
        enc = self.tokenize("warm up")
        for width in self.widths:
            self._forward(width, [enc] * width)

    def info(self) -> dict[str, Any]:
        """What /info reports about the model side."""
        p = self.pack
        return {
            "backbone": public_name(p.backbone),
            "backbone_hash": p.backbone_hash,
            "model_type": self.view.model_type,
            "num_layers": self.view.num_layers,
            "widths": self.widths,
            "adapters": [
                {
                    "n": n,
                    "k": p.models[n].k,
                    "kind": p.models[n].config.kind,
                    "name": p.dirs[n].name,  # never a filesystem path: /info goes to clients
                    "sha256": p.weight_hashes[n],
                }
                for n in sorted(p.models)
                if n in self.widths
            ],
            "labels": self.label_names,
            "max_length": self.max_length,
            "device": str(self.view.device),
            "fallback_margin": self.fallback_margin,
            "fallback_max_per_step": self.fallback_max_per_step,
        }


def public_name(source: str) -> str:
    """What /info may say of a model source: a path's last component, a hub id or zoo name as is."""
    return (
        Path(source).name if ("/" in source and Path(source).exists()) or source.startswith("/") else source
    )


def _select_widths(available: list[int], wanted: Sequence[int]) -> list[int]:
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise ConfigError(
            f"--widths asks for N={missing}, but the loaded adapters give widths {available}. "
            "Drop them, or add adapters trained for those N to the pack."
        )
    return sorted(set(wanted) | {1})
