"""EvalConfig: every knob of `evaluate` is one field, one `revmux eval` flag with the field's default, and a
value given on the command line or as a keyword reaches the evaluation; bad values are refused naming the
flag. The CLI tests load no model: the evaluation is stubbed where it would start."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

import revmux.cli.evaluate
import revmux.evaluate
from revmux.cli import app
from revmux.config_flags import flag_names
from revmux.errors import ConfigError
from revmux.eval_config import EvalConfig
from revmux.evaluate import EvalReport, evaluate
from tests.test_bench_config import _as_flag, flags_of, options, shown_default

runner = CliRunner()

# field -> (flag value as typed, the field's value): one non-default setting per EvalConfig knob
SETTINGS = {
    "groupings": ("3", 3),
    "batch_size": ("8", 8),
    "seed": ("4", 4),
    "max_length": ("32", 32),
    "adversarial_partners": ("5", 5),
    "adversarial_rows": ("7", 7),
    "fallback_margin": ("0.5,0.6", [0.5, 0.6]),
    "quantize": ("bf16", "bf16"),
    "serve_window": ("64", 64),
}

BAD = [
    (["--groupings", "0"], "--groupings"),
    (["--serve-window", "0"], "--serve-window"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seed", "x"], "--seed"),
    (["--max-length", "1"], "--max-length"),
    (["--adversarial-partners", "0"], "--adversarial-partners"),
    (["--adversarial-rows", "0"], "--adversarial-rows"),
    (["--fallback-margin", "0,x"], "--fallback-margin"),
    (["--fallback-margin", "0.5,2"], "--fallback-margin"),
    (["--quantize", "int4"], "--quantize"),
]


def test_every_field_is_an_eval_flag_with_its_default_and_help():
    params = options("eval")
    for f in dataclasses.fields(EvalConfig):
        flag = flag_names(EvalConfig)[f.name]
        assert flag in params[f.name].opts, f"EvalConfig.{f.name} has no {flag} on `revmux eval`"
        assert params[f.name].help == f"{f.metadata['help']} (default {shown_default(f)})"
    assert set(SETTINGS) == {f.name for f in dataclasses.fields(EvalConfig)}  # a new knob needs a row here


def test_the_flags_users_type_keep_their_names():
    want = "--groupings --batch-size --seed --max-length --adversarial-partners --adversarial-rows"
    want += " --fallback-margin --quantize --adapter --model --task --data-dir --eval --text-col --pair-col"
    want += " --label-col --split --json --verbalizer --prompt-style --verbalizer-words --instruction"
    assert set(want.split()) <= flags_of("eval")


@pytest.fixture
def started(monkeypatch):
    """The EvalConfig `revmux eval --adapter A` hands evaluate (loading and evaluation are stubbed)."""
    seen: list[EvalConfig] = []

    def spy(model, data, *, config=None, progress=False, task=None, **knobs):
        seen.append(config)
        raise ConfigError("stubbed: the evaluation stops here")

    monkeypatch.setattr(revmux.evaluate, "evaluate", spy)
    monkeypatch.setattr(revmux.cli.evaluate, "_adapter_and_data", lambda *a: (None, None, "sst2"))

    def run(*args: str) -> EvalConfig:
        result = runner.invoke(app, ["eval", "--adapter", "A", *args])
        assert result.exit_code == 2 and "stubbed" in result.output, result.output
        return seen.pop()

    return run


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_flag_reaches_evaluate(name, started):
    typed, value = SETTINGS[name]
    cfg = started(*_as_flag(name, typed))
    assert getattr(cfg, name) == value != getattr(EvalConfig(), name)
    others = {f.name for f in dataclasses.fields(EvalConfig)} - {name}
    assert all(getattr(cfg, o) == getattr(EvalConfig(), o) for o in others)


def test_no_flag_gives_the_defaults(started):
    assert started() == EvalConfig()


@pytest.mark.parametrize(("args", "flag"), BAD, ids=lambda a: " ".join(a) if isinstance(a, list) else a)
def test_a_bad_value_is_refused_naming_its_flag(args, flag):
    result = runner.invoke(app, ["eval", "--adapter", "A", *args])
    assert result.exit_code == 2 and flag in " ".join(result.output.split()), result.output


def test_keywords_override_the_config_and_unknown_ones_are_refused():
    cfg = EvalConfig.resolve(EvalConfig(groupings=3, seed=2), {"groupings": 1, "fallback_margin": (0, 0.5)})
    assert (cfg.groupings, cfg.seed, cfg.fallback_margin, cfg.quantize) == (1, 2, [0.0, 0.5], "none")
    with pytest.raises(ConfigError, match=r"unknown keys \['grouping'\]"):
        evaluate(None, None, grouping=3)  # refused before the model is touched
    with pytest.raises(ConfigError, match="--batch-size must be an integer >= 1"):
        evaluate(None, None, config=EvalConfig(), batch_size=0)


def test_the_reports_extra_measurements_sit_at_the_top_of_its_json():
    values = {f.name: 0 for f in dataclasses.fields(EvalReport) if f.name != "extra"}
    plain = EvalReport(**values)
    assert plain.to_dict() == values  # nothing asked for: the keys of before
    fallback = [{"margin": 0.5}]
    report = EvalReport(**values, extra={"quantize": "int8", "fallback": fallback})
    assert report.to_dict() == values | {"quantize": "int8", "fallback": fallback}
