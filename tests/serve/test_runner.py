"""runner.py on a tiny BERT pack: outputs equal the models run directly, fallback, isolation, debug hashes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from revmux.errors import ConfigError, InputError
from revmux.runs import PLAIN_MIN_ROWS_PER_RUN
from revmux.serve.batcher import Group, Request
from revmux.serve.contract import Encoded, token_hash
from revmux.serve.pack import load_pack
from revmux.serve.runner import ModelRunner, prob_margin

TEXTS = [
    "a gripping , funny film",
    "dull",
    "the plot never quite comes together , sadly , despite a strong cast",
    "superb",
    "meh .",
    "not bad at all",
    "an utterly forgettable sequel",
]


@pytest.fixture(scope="module")
def pack(pack_dir):
    return load_pack(pack=pack_dir)


def requests_for(runner: ModelRunner, texts: list[str]) -> list[Request]:
    encs = [runner.tokenize(t, debug=True) for t in texts]
    return [Request(n_tokens=e.n_tokens, arrival_s=0.0, deadline_s=1e9, payload=e) for e in encs]


def direct(pack, width: int, texts: list[str]) -> torch.Tensor:
    enc = pack.view.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.inference_mode():
        if width == 1:
            return pack.view.forward_unsplit(inputs)
        return pack.models[width](inputs, order=torch.arange(len(texts)))


def test_a_mixed_step_equals_each_model_run_directly(pack):
    runner = ModelRunner(pack)
    reqs = requests_for(runner, TEXTS)
    groups = [Group(4, reqs[:4]), Group(2, reqs[4:6]), Group(1, reqs[6:])]
    out = runner.run(groups)
    assert set(out) == {r.id for r in reqs}
    for g in groups:
        texts = [TEXTS[reqs.index(r)] for r in g.requests]
        want = direct(pack, g.width, texts)
        for r, row in zip(g.requests, want, strict=True):
            assert out[r.id].width == g.width and not out[r.id].fallback
            torch.testing.assert_close(torch.tensor(out[r.id].logits), row, atol=1e-5, rtol=1e-5)


def test_n1_is_the_teacher_alone(pack):
    runner = ModelRunner(pack)
    reqs = requests_for(runner, TEXTS[:3])
    out = runner.run([Group(1, [r]) for r in reqs])
    for text, r in zip(TEXTS, reqs, strict=False):
        torch.testing.assert_close(
            torch.tensor(out[r.id].logits), direct(pack, 1, [text])[0], atol=1e-5, rtol=1e-5
        )


def test_confidence_fallback_reruns_low_margin_answers_at_n1(pack):
    runner = ModelRunner(pack, fallback_margin=1.0)  # every multiplexed answer is below a margin of 1
    reqs = requests_for(runner, TEXTS[:4])
    out = runner.run([Group(2, reqs[:2]), Group(1, [reqs[2]]), Group(1, [reqs[3]])])
    assert [out[r.id].fallback for r in reqs] == [True, True, False, False]
    assert runner.fallbacks == 2
    for text, r in zip(TEXTS[:2], reqs[:2], strict=True):
        assert out[r.id].width == 1
        torch.testing.assert_close(
            torch.tensor(out[r.id].logits), direct(pack, 1, [text])[0], atol=1e-5, rtol=1e-5
        )


def test_a_failing_input_fails_alone_and_its_partner_is_answered(pack):
    runner = ModelRunner(pack)
    good = requests_for(runner, ["fine text"])[0]
    bad = Request(n_tokens=3, arrival_s=0.0, deadline_s=1e9, payload=Encoded([101, 10**7, 102]))
    out = runner.run([Group(2, [good, bad])])
    assert isinstance(out[bad.id], Exception)
    torch.testing.assert_close(
        torch.tensor(out[good.id].logits), direct(pack, 1, ["fine text"])[0], atol=1e-5, rtol=1e-5
    )


def test_debug_hash_is_the_hash_of_the_row_that_answered(pack):
    runner = ModelRunner(pack)
    reqs = requests_for(runner, TEXTS[:4])
    out = runner.run([Group(4, reqs)])
    for text, r in zip(TEXTS, reqs, strict=False):
        ids = pack.view.tokenizer(text, truncation=True, max_length=64)["input_ids"]
        assert out[r.id].input_hash == token_hash(ids)


def test_tokenize_truncates_or_refuses_long_inputs(pack):
    runner = ModelRunner(pack, max_length=8)
    long = "word " * 50
    assert runner.tokenize(long).n_tokens == 8
    pair = runner.tokenize("first sentence", "second sentence")
    assert pair.token_type_ids is not None and 1 in pair.token_type_ids
    with pytest.raises(InputError, match="more than max_length=8"):
        runner.tokenize(long, truncate=False)


def test_widths_must_be_loaded(pack):
    assert ModelRunner(pack, widths=[2]).widths == [1, 2]
    with pytest.raises(ConfigError, match="--widths asks for N=\\[8\\]"):
        ModelRunner(pack, widths=[1, 8])


def test_prob_margin():
    assert prob_margin([0.0, 0.0]) == pytest.approx(0.0)
    assert prob_margin([10.0, 0.0, 0.0]) == pytest.approx(1.0, abs=1e-3)
    assert prob_margin([1.0]) == 1.0


def test_a_prompted_pack_encodes_requests_with_its_prompt_and_never_shortens_silently(pack_dir, tmp_path):
    """The runner tokenizes with the adapters' own encoder; "truncate": false refuses a long prompted input."""
    prompt = {
        "style": "plain",
        "instruction": "Rate it.",
        "template": "Review: {text}",
        "words": ["a", "b", "c"],
    }
    for n in ("n2", "n4"):
        shutil.copytree(pack_dir / n, tmp_path / n)
        path = tmp_path / n / "mux_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "prompt": prompt}))
    runner = ModelRunner(load_pack(pack=tmp_path))
    assert runner.encoder.prompt is not None and runner.encoder == runner.pack.models[2].encoder
    enc = runner.tokenize("a gripping film")
    assert enc.input_ids == runner.tokenizer("Rate it.\nReview: a gripping film\nAnswer:")["input_ids"]
    long = "word " * 80
    assert runner.tokenize(long).n_tokens <= 64
    with pytest.raises(InputError, match='as a plain prompt, more than max_length=64.*send "truncate": true'):
        runner.tokenize(long, truncate=False)


def _low_margin_groups(runner: ModelRunner) -> tuple[list[Group], list[Request]]:
    reqs = requests_for(runner, TEXTS[:4])
    return [Group(2, reqs[:2]), Group(2, reqs[2:])], reqs


def test_fallback_reruns_at_most_the_cap_lowest_margins_first_and_flags_the_rest(pack):
    runner = ModelRunner(pack, fallback_margin=1.0, fallback_max_per_step=1)  # every margin is below 1
    groups, reqs = _low_margin_groups(runner)
    plain = ModelRunner(pack).run(groups)
    out = runner.run(groups)
    rerun = [r for r in reqs if out[r.id].fallback]
    flagged = [r for r in reqs if out[r.id].fallback_failed]
    assert len(rerun) == 1 and len(flagged) == 3 and runner.fallbacks == 1 and runner.fallbacks_failed == 3
    lowest = min(reqs, key=lambda r: prob_margin(plain[r.id].logits))
    assert rerun == [lowest]
    for r in flagged:  # capped answers keep their multiplexed logits
        assert out[r.id].logits == plain[r.id].logits and out[r.id].width == 2


def test_a_failed_fallback_keeps_the_multiplexed_answer_and_flags_it(pack, monkeypatch):
    runner = ModelRunner(pack, fallback_margin=1.0)
    groups, reqs = _low_margin_groups(runner)

    def broken(batch):
        raise RuntimeError("N = 1 re-run failed")

    monkeypatch.setattr(runner, "_rerun_alone", broken)
    out = runner.run(groups)
    assert all(out[r.id].fallback_failed and not out[r.id].fallback and out[r.id].width == 2 for r in reqs)
    assert runner.fallbacks == 0 and runner.fallbacks_failed == 4


def test_fallback_reuses_the_prefill_and_equals_the_unmultiplexed_answer(pack):
    """The re-run starts from the step's layer-k states: layers [0, k) run once per request, and the
    answer is the N = 1 model's."""
    runner = ModelRunner(pack, fallback_margin=1.0)
    groups, reqs = _low_margin_groups(runner)
    first_layer = pack.view.layer_modules()[0]
    rows = []
    handle = first_layer.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    try:
        out = runner.run(groups)
    finally:
        handle.remove()
    assert sum(rows) == len(reqs)  # the prefill of the 4 requests, nothing more
    for text, r in zip(TEXTS, reqs, strict=False):
        assert out[r.id].fallback and out[r.id].width == 1
        torch.testing.assert_close(
            torch.tensor(out[r.id].logits), direct(pack, 1, [text])[0], atol=1e-5, rtol=1e-5
        )


def test_info_names_adapters_without_filesystem_paths(pack, pack_dir):
    info = json.dumps(ModelRunner(pack).info())
    assert str(pack_dir) not in info and str(pack_dir.parent) not in info
    assert all(
        "name" in a and "sha256" in a and "path" not in a for a in ModelRunner(pack).info()["adapters"]
    )


def test_n1_runs_length_sorted_runs_cut_to_their_rows_with_the_padded_answers(pack, monkeypatch):
    """Width 1 serves the teacher as the sorted plain model: longest rows first, runs of at least
    PLAIN_MIN_ROWS_PER_RUN rows cut after their last real column; every answer is the padded batch's."""
    runner = ModelRunner(pack)
    texts = [TEXTS[i % len(TEXTS)] + " !" * (i % 5) for i in range(3 * PLAIN_MIN_ROWS_PER_RUN + 1)]
    reqs = requests_for(runner, texts)
    forward = pack.view.forward_unsplit
    widths: list[tuple[int, int]] = []
    monkeypatch.setattr(
        pack.view,
        "forward_unsplit",
        lambda inputs: widths.append(tuple(inputs["input_ids"].shape)) or forward(inputs),
    )
    out = runner.run([Group(1, [r]) for r in reqs])
    monkeypatch.undo()
    assert len(widths) == 3  # 25 rows: 3 runs of at least 8
    assert sum(rows for rows, _ in widths) == len(texts)
    cols = [t for _, t in widths]
    assert cols == sorted(cols, reverse=True) and cols[-1] < cols[0]
    assert cols[0] == max(r.payload.n_tokens for r in reqs)
    want = direct(pack, 1, texts)
    for r, row in zip(reqs, want, strict=True):
        torch.testing.assert_close(torch.tensor(out[r.id].logits), row, atol=1e-5, rtol=1e-5)
