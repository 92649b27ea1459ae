"""Prompt + verbalizer teachers: a task's texts become an instruction prompt whose answer is one token.

What it is: `PromptSpec` (style, instruction, content template, one verbalizer word per class), per-task
defaults (`default_prompt`), `verbalizer_ids` (each word must be exactly one token, else a ConfigError
naming the word and its split), and the text transform applied before tokenization (`render`,
`prompt_texts`, `apply_prompt`): style "chat" applies the tokenizer's chat template with the generation
prompt, so the answer's first token follows the assistant header (the verbalizer words as they start an
answer, without a leading space); style "plain" writes "instruction / text / Answer:" for models without a
chat template (the words then follow a space). Texts are shortened so that the prompt's end, where the
answer is read, always survives `max_length`. Adapters save the spec in mux_config.json, and
`revmux.encoding.RequestEncoder` (the model's `encoder`) applies it to raw texts on every path.
`shared_prefix_mask` finds, in a group's layer-k states, the leading columns of the prompt every request
shares, which the causal decoder's tail then reads exactly instead of multiplexed.
What it is not: generation, few-shot selection or soft prompts. The view reads the LM head, restricted to
the verbalizer tokens, at each request's own last real token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from revmux.data import TaskData
from revmux.errors import ConfigError, InputError

STYLES = ("chat", "plain")
_MIN_TEXT_TOKENS = 8


@dataclass(frozen=True)
class PromptSpec:
    """How a request's text (and second text) becomes a prompt, and the answer word of each class.

    `template` holds "{text}" and, for sentence-pair tasks, "{pair}"; the user turn is
    instruction + newline + template. `words[c]` is class c's answer word.
    """

    style: str
    instruction: str
    template: str
    words: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ConfigError(f"--prompt-style must be one of {', '.join(STYLES)}, got {self.style!r}.")
        if "{text}" not in self.template:
            raise ConfigError(f"a prompt template must contain '{{text}}', got {self.template!r}.")
        if len(self.words) < 2 or any(not w.strip() for w in self.words):
            raise ConfigError(
                f"--verbalizer-words needs one non-empty word per class (>= 2), got {self.words!r}."
            )
        if len({w.strip() for w in self.words}) != len(self.words):
            raise ConfigError(f"--verbalizer-words must differ from each other, got {self.words!r}.")

    @property
    def answer_tokens(self) -> list[str]:
        """The text of each class's answer token: the word itself (chat) or after a space (plain)."""
        return [w.strip() if self.style == "chat" else " " + w.strip() for w in self.words]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptSpec:
        names = {"style", "instruction", "template", "words"}
        if not isinstance(data, dict) or set(data) != names:
            raise ConfigError(f"a prompt spec needs exactly the keys {sorted(names)}, got {data!r}.")
        return cls(**{**data, "words": list(data["words"])})


# task -> (instruction, template, words in label order; see revmux.data.TASKS for the label order)
TASK_PROMPTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sst2": (
        "Is the sentiment of this review positive or negative? Answer with one word.",
        "Review: {text}",
        ("negative", "positive"),
    ),
    "rte": (
        "Does the premise entail the hypothesis? Answer yes or no.",
        "Premise: {text}\nHypothesis: {pair}",
        ("yes", "no"),  # entailment, not_entailment
    ),
    "qnli": (
        "Does the sentence answer the question? Answer yes or no.",
        "Question: {text}\nSentence: {pair}",
        ("yes", "no"),  # entailment, not_entailment
    ),
    "mrpc": (
        "Do the two sentences mean the same thing? Answer yes or no.",
        "Sentence 1: {text}\nSentence 2: {pair}",
        ("no", "yes"),  # not_equivalent, equivalent
    ),
}


def default_prompt(
    style: str,
    task: str | None,
    label_names: Sequence[str],
    *,
    words: Sequence[str] | None = None,
    instruction: str | None = None,
    is_pair: bool = False,
) -> PromptSpec:
    """The prompt of `task` (sst2, rte, qnli, mrpc), or a generic one for other data, with overrides.

    Generic: "Classify the text. Answer with one of: <words>." over "Text: {text}" (+ "Second text: {pair}"),
    the words defaulting to the label names.
    """
    key = (task or "").lower().replace("-", "")
    if key in TASK_PROMPTS:
        task_instruction, template, task_words = TASK_PROMPTS[key]
    else:
        task_words = tuple(label_names)
        template = "Text: {text}\nSecond text: {pair}" if is_pair else "Text: {text}"
        task_instruction = ""
    chosen = [w.strip() for w in (words if words is not None else task_words)]
    if len(chosen) != len(label_names):
        raise ConfigError(
            f"--verbalizer-words gives {len(chosen)} words {chosen} for {len(label_names)} classes "
            f"{list(label_names)}; give one word per class, in label order."
        )
    if instruction is None:
        instruction = task_instruction or f"Classify the text. Answer with one of: {', '.join(chosen)}."
    return PromptSpec(style=style, instruction=instruction, template=template, words=chosen)


def verbalizer_ids(tokenizer: Any, spec: PromptSpec) -> list[int]:
    """One token id per class; ConfigError naming the word and its token split when a word is not one token."""
    ids = []
    for word, token_text in zip(spec.words, spec.answer_tokens, strict=True):
        pieces = tokenizer(token_text, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            split = tokenizer.convert_ids_to_tokens(pieces)
            single = [
                v
                for v in dict.fromkeys([word.lower(), word.capitalize(), word.upper()])
                if len(tokenizer(_as_answer(v, spec), add_special_tokens=False)["input_ids"]) == 1
            ]
            hint = f" ({', '.join(map(repr, single))} would be)" if single else ""
            raise ConfigError(
                f"verbalizer word {word!r} is {len(pieces)} tokens {split} for this tokenizer as a {spec.style} "
                f"answer ({token_text!r}); each class needs a one-token word{hint}. Choose others with "
                "--verbalizer-words."
            )
        ids.append(int(pieces[0]))
    return ids


def render(
    tokenizer: Any, spec: PromptSpec, text: str, pair: str | None = None, *, adds_bos: bool | None = None
) -> str:
    """The prompt text of one request; the tokenizer adds its own special tokens when it tokenizes it.

    `adds_bos`: whether the tokenizer itself prepends BOS (computed when None).
    """
    values = {"text": text, "pair": pair if pair is not None else ""}
    content = re.sub(r"\{(text|pair)\}", lambda m: values[m.group(1)], spec.template)  # one pass
    user = f"{spec.instruction}\n{content}" if spec.instruction else content
    if spec.style == "plain":
        return f"{user}\nAnswer:"
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(
            "--prompt-style chat needs a tokenizer with a chat template, and this one has none; use "
            "--prompt-style plain for base models."
        )
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    bos = getattr(tokenizer, "bos_token", None)
    if bos and prompt.startswith(bos) and (_adds_bos(tokenizer) if adds_bos is None else adds_bos):
        prompt = prompt[len(bos) :]  # the template writes BOS and so would the tokenizer
    return prompt


def prompt_texts(
    tokenizer: Any,
    spec: PromptSpec | dict[str, Any] | None,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    max_length: int,
    *,
    shorten: bool = True,
) -> tuple[list[str], list[str] | None]:
    """(prompts, None): every text (and pair) rendered, shortened so each prompt fits `max_length` tokens.

    No spec: the inputs unchanged. Long texts lose their end (pairs: the longer side first), never the
    prompt's end, where the answer is read. `shorten=False`: an over-long prompt is an InputError instead.
    """
    if spec is None:
        return list(texts), None if pairs is None else list(pairs)
    spec = spec if isinstance(spec, PromptSpec) else PromptSpec.from_dict(spec)
    bos = _adds_bos(tokenizer)
    rows = [[t] if pairs is None else [t, p] for t, p in zip(texts, pairs or texts, strict=True)]
    empty = [""] if pairs is None else ["", ""]
    overhead = _length(tokenizer, [render(tokenizer, spec, *empty, adds_bos=bos)])[0]
    budget = max_length - overhead
    if budget < _MIN_TEXT_TOKENS:
        raise ConfigError(
            f"--max-length {max_length} leaves {budget} tokens for the text after the {overhead}-token "
            f"{spec.style} prompt; use --max-length {overhead + 64} or more."
        )
    prompts = [render(tokenizer, spec, *parts, adds_bos=bos) for parts in rows]
    for i, length in enumerate(_length(tokenizer, prompts)):
        excess, parts = length - max_length, list(rows[i])
        if excess > 0 and not shorten:
            raise InputError(
                f"input {i} is {length} tokens as a {spec.style} prompt, more than max_length={max_length}, "
                "and truncation is off; shorten it or turn truncation on."
            )
        for _ in range(8):  # shorten the longest part by the excess (decode/encode may shift a token)
            if excess <= 0:
                break
            ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in parts]
            j = max(range(len(parts)), key=lambda s: len(ids[s]))
            parts[j] = tokenizer.decode(ids[j][: max(0, len(ids[j]) - excess)])
            prompts[i] = render(tokenizer, spec, *parts, adds_bos=bos)
            excess = _length(tokenizer, [prompts[i]])[0] - max_length
        if excess > 0:
            raise ConfigError(
                f"cannot shorten row {i} to --max-length {max_length} tokens; raise --max-length."
            )
    return prompts, None


def apply_prompt(
    tokenizer: Any, spec: PromptSpec | dict[str, Any] | None, data: TaskData, max_length: int
) -> TaskData:
    """`data` with its texts replaced by `spec`'s prompts (pairs folded in); unchanged without a spec."""
    if spec is None:
        return data
    texts, _ = prompt_texts(tokenizer, spec, data.texts, data.pairs, max_length)
    return TaskData(texts, None, list(data.labels), list(data.label_names), data.source + " [prompted]")


def load_prompted_backbone(
    path_or_id: str | Path,
    spec: PromptSpec,
    *,
    dtype: Any = None,
) -> Any:
    """The LM-head view of `path_or_id` read through `spec`'s verbalizer tokens (`view.verbalizer_ids`).

    The view does not carry the prompt: pass `spec` on (`MuxModel.from_backbone(view, prompt=spec)`,
    `train(..., prompt=spec)`, `RequestEncoder(view.tokenizer, prompt=spec)`), and adapters save it.
    """
    from revmux.backbones.registry import load_backbone, load_tokenizer

    ids = verbalizer_ids(load_tokenizer(path_or_id), spec)
    return load_backbone(path_or_id, head="lm", verbalizer_ids=ids, dtype=dtype)


# ----------------------------------------------------------------------------------------------- internals


def _as_answer(word: str, spec: PromptSpec) -> str:
    return word if spec.style == "chat" else " " + word


def _length(tokenizer: Any, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts)["input_ids"]]


def _adds_bos(tokenizer: Any) -> bool:
    bos_id = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return bos_id is not None and bool(ids) and ids[0] == bos_id


def shared_prefix_mask(h: Tensor, masks: Tensor, stop: Tensor, rtol: float = 1e-3) -> Tensor:
    """(G, T) bool: the leading columns where every request of a group holds the same state.

    h: (G, N, T, d) layer-k states; masks: (G, N, T); stop: (G,) first column that must stay
    multiplexed (the group's earliest read position). A column is shared when all N requests have a
    real token there whose state equals request 0's to `rtol` of its largest entry, and so have all
    columns before it. In a causal model such a column is the requests' common prompt prefix: fed to
    the tail as is, every layer computes it exactly as for each request alone, and the attention of
    the multiplexed columns after it reads the true prefix (its attention sink included).
    """
    scale = h[:, :1].abs().amax(dim=-1)  # (G, 1, T)
    same = ((h - h[:, :1]).abs().amax(dim=-1) <= rtol * scale) & masks.bool()  # (G, N, T)
    lead = same.all(dim=1).to(torch.int8).cumprod(dim=1).bool()  # (G, T)
    cols = torch.arange(h.shape[2], device=h.device)
    return lead & (cols < stop.unsqueeze(1))
