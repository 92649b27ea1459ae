"""The request encoder: how raw inputs become a model's token ids, written once for every path.

What it is: `RequestEncoder` = tokenizer + optional `PromptSpec` + `max_length` + truncation policy
(+ the verbalizer ids the head reads, for comparisons). `render` applies the prompt (texts shortened so
the prompt's end, where the answer is read, always fits), `prepare` does it to a TaskData, `__call__`
tokenizes a padded batch and `encode_one` one request. Training, evaluation, prediction, bench and
serving all go through it; `MuxModel.encoder` is the one built from the adapter's saved config
(`RequestEncoder.from_config`). With truncation off, an input longer than `max_length` is an InputError,
prompted or not, never shortened silently. `describe()` and `difference()` let a pack refuse adapters
that would encode the same request differently.
What it is not: padding or bucketing of prefill runs (the model does that), or a tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from revmux.data import TaskData, model_inputs
from revmux.errors import ConfigError, InputError
from revmux.prompting import PromptSpec, apply_prompt, prompt_texts


@dataclass(frozen=True)
class RequestEncoder:
    """Raw text (and optional second text) -> token ids, the same way for training and serving.

    `prompt`: the prompted teacher's spec (None: texts are tokenized as they are). `truncation`:
    True shortens long inputs to `max_length` (prompted: the text, never the prompt's end); False
    raises InputError for them. `verbalizer_ids`: the answer token of each class (LM heads), compared
    across a pack's adapters but not used to encode.
    """

    tokenizer: Any
    max_length: int = 128
    prompt: PromptSpec | None = None
    truncation: bool = True
    verbalizer_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_length, int) or self.max_length < 1:
            raise ConfigError(f"--max-length must be an integer >= 1, got {self.max_length!r}.")
        if isinstance(self.prompt, dict):
            object.__setattr__(self, "prompt", PromptSpec.from_dict(self.prompt))
        if self.verbalizer_ids is not None:
            object.__setattr__(self, "verbalizer_ids", tuple(int(i) for i in self.verbalizer_ids))

    @classmethod
    def from_config(cls, config: Any, tokenizer: Any) -> RequestEncoder:
        """The encoder of an adapter: its MuxConfig's prompt, max_length and verbalizer ids."""
        return cls(
            tokenizer,
            max_length=config.max_length,
            prompt=PromptSpec.from_dict(config.prompt) if config.prompt is not None else None,
            verbalizer_ids=config.verbalizer_ids,
        )

    def replace(self, **changes: Any) -> RequestEncoder:
        """A copy with some fields changed, e.g. `encoder.replace(max_length=256)`."""
        return dataclasses.replace(self, **changes)

    # ---- text -----------------------------------------------------------------------------------
    def render(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, *, truncation: bool | None = None
    ) -> tuple[list[str], list[str] | None]:
        """(texts, pairs) as the tokenizer sees them: the prompts (pairs folded in), or the inputs unchanged."""
        if self.prompt is None:
            return list(texts), None if pairs is None else list(pairs)
        shorten = self.truncation if truncation is None else truncation
        return prompt_texts(self._tok(), self.prompt, texts, pairs, self.max_length, shorten=shorten)

    def prepare(self, data: TaskData) -> TaskData:
        """`data` with its texts replaced by the prompts (unchanged, the same object, without a prompt)."""
        if self.prompt is None:
            return data
        return apply_prompt(self._tok(), self.prompt, data, self.max_length)

    # ---- tokens ---------------------------------------------------------------------------------
    def __call__(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        *,
        truncation: bool | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """The padded batch (input_ids, attention_mask, token_type_ids if any) of raw inputs."""
        texts, pairs = self.render(texts, pairs, truncation=truncation)
        return self.tokenize(texts, pairs, truncation=truncation, device=device)

    def tokenize(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        *,
        truncation: bool | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """The padded batch of already rendered texts (`render` / `prepare` output)."""
        truncate = self.truncation if truncation is None else truncation
        if not truncate:
            self._check_lengths(texts, pairs)
        enc = self._tok()(
            list(texts),
            text_pair=None if pairs is None else list(pairs),
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {key: v if device is None else v.to(device) for key, v in model_inputs(enc).items()}

    def encode_one(
        self, text: str, pair: str | None = None, *, truncation: bool | None = None
    ) -> dict[str, list]:
        """Unpadded token lists of one raw input (input_ids, and token_type_ids when the tokenizer gives them)."""
        texts, pairs = self.render([text], None if pair is None else [pair], truncation=truncation)
        truncate = self.truncation if truncation is None else truncation
        enc = self._tok()(
            texts[0],
            text_pair=None if pairs is None else pairs[0],
            truncation=truncate,
            max_length=self.max_length if truncate else None,
        )
        out = {"input_ids": list(enc["input_ids"])}
        if len(out["input_ids"]) > self.max_length:
            raise InputError(_too_long(len(out["input_ids"]), self.max_length))
        if enc.get("token_type_ids") is not None:
            out["token_type_ids"] = list(enc["token_type_ids"])
        return out

    # ---- comparison -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What decides the token ids and the answer read: prompt, max_length, truncation, verbalizer, tokenizer."""
        return {
            "prompt": None if self.prompt is None else self.prompt.to_dict(),
            "max_length": self.max_length,
            "truncation": self.truncation,
            "verbalizer_ids": None if self.verbalizer_ids is None else list(self.verbalizer_ids),
            "tokenizer": None if self.tokenizer is None else tokenizer_fingerprint(self.tokenizer)[:16],
        }

    to_dict = describe

    def difference(self, other: RequestEncoder) -> str | None:
        """None when both encode every request alike, else the first differing field with both values."""
        mine, theirs = self.describe(), other.describe()
        for key in mine:
            if mine[key] != theirs[key]:
                a, b = mine[key], theirs[key]
                if key == "tokenizer":
                    a, b = _tokenizer_name(self.tokenizer), _tokenizer_name(other.tokenizer)
                return f"{key} {a!r} vs {b!r}"
        return None

    # ---- internals ------------------------------------------------------------------------------
    def _tok(self) -> Any:
        if self.tokenizer is None:
            raise ConfigError("the model's backbone view has no tokenizer; load it with load_backbone(path).")
        return self.tokenizer

    def _check_lengths(self, texts: Sequence[str], pairs: Sequence[str] | None) -> None:
        rows = self._tok()(list(texts), text_pair=None if pairs is None else list(pairs))["input_ids"]
        for i, ids in enumerate(rows):
            if len(ids) > self.max_length:
                raise InputError(_too_long(len(ids), self.max_length, i))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides the token ids: tokenizer class, vocabulary, padding and truncation sides.

    The same digest as the prefill cache's key (revmux.train.cache).
    """
    vocab = sorted(tokenizer.get_vocab().items())
    payload = [type(tokenizer).__name__, tokenizer.padding_side, tokenizer.truncation_side, vocab]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def _tokenizer_name(tokenizer: Any) -> str:
    if tokenizer is None:
        return "none"
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return f"{name} ({tokenizer_fingerprint(tokenizer)[:16]})"


def _too_long(n_tokens: int, max_length: int, row: int | None = None) -> str:
    which = "the input" if row is None else f"input {row}"
    return (
        f"{which} has {n_tokens} tokens, more than max_length={max_length}, and truncation is off; "
        "shorten it or turn truncation on."
    )
