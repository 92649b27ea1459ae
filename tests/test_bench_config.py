"""BenchConfig: every knob of `run_bench` is one field, one `revmux bench` flag with the field's default, and
a value given on the command line or as a keyword reaches the bench; bad values are refused naming the flag.
No model is loaded: the bench is stubbed where it would start."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated

import pytest
import torch
import typer
from typer.main import get_command
from typer.testing import CliRunner

import revmux.bench
import revmux.cli.bench
from revmux.bench import DTYPES, run_bench
from revmux.bench_config import DTYPE_NAMES, BenchConfig
from revmux.cli import app
from revmux.config import DEFAULT_MAX_LENGTH
from revmux.config_flags import _spelled, config_flags, flag_names
from revmux.errors import ConfigError

runner = CliRunner()

# field -> (flag value as typed, the field's value): one non-default setting per BenchConfig knob
SETTINGS = {
    "batch_sizes": ("4,16", [4, 16]),
    "max_length": ("32", 32),
    "device": ("cuda:1", "cuda:1"),
    "dtype": ("bf16", "bf16"),
    "threads": ("3", 3),
    "repeats": ("2", 2),
    "warmup": ("0", 0),
    "length_aware": (False, False),
    "pipeline": (False, False),
    "compile": (True, True),
    "baselines": ("int8,ort_int8", "int8,ort_int8"),
    "quantize": ("int8", "int8"),
    "backend": ("onnx", "onnx"),
    "plain_runs": ("mux", "mux"),
    "seed": ("5", 5),
    "fallback_margin": ("0.5", 0.5),
}

# flag values `revmux bench` refuses, and the flag its error names
BAD = [
    (["--fallback-margin", "1.5"], "--fallback-margin"),
    (["--plain-runs", "fastest"], "--plain-runs"),
    (["--batch-sizes", "8,x"], "--batch-sizes"),
    (["--batch-sizes", "0"], "--batch-sizes"),
    (["--max-length", "1"], "--max-length"),
    (["--device", "tpu"], "--device"),
    (["--dtype", "fp8"], "--dtype"),
    (["--threads", "0"], "--threads"),
    (["--repeats", "0"], "--repeats"),
    (["--warmup", "-1"], "--warmup"),
    (["--baselines", "int4"], "--baselines"),
    (["--quantize", "int4"], "--quantize"),
    (["--backend", "tvm"], "--backend"),
    (["--backend", "onnx", "--quantize", "bf16"], "--backend onnx"),
    (["--compile", "--warmup", "0"], "--warmup"),
    (["--compile", "--quantize", "int8"], "--compile"),
]


def options(command: str) -> dict[str, typer.core.TyperOption]:
    """param name -> its click option, from the command typer builds for `revmux COMMAND`."""
    return {p.name: p for p in get_command(app).commands[command].params}


def flags_of(command: str) -> set[str]:
    return {opt for p in options(command).values() for opt in [*p.opts, *p.secondary_opts]}


def shown_default(f: dataclasses.Field) -> str:
    """How a field's default reads in its flag's help."""
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return str(f.metadata.get("default", "unset" if default is None else _spelled(default)))


def test_every_field_is_a_bench_flag_with_its_default_and_help():
    params = options("bench")
    for f in dataclasses.fields(BenchConfig):
        flag = flag_names(BenchConfig)[f.name]
        assert flag in params[f.name].opts, f"BenchConfig.{f.name} has no {flag} on `revmux bench`"
        assert params[f.name].help == f"{f.metadata['help']} (default {shown_default(f)})"
    assert set(SETTINGS) == {f.name for f in dataclasses.fields(BenchConfig)}  # a new knob needs a row here


def test_the_flags_users_type_keep_their_names():
    want = "--batch-sizes --max-length --device --dtype --threads --repeats --warmup --pipeline --no-pipeline"
    want += " --length-aware --no-length-aware --compile --baselines --quantize --backend --seed"
    want += " --adapter --model --n --k --mux --mux-option --task --data-dir --texts --json --out"
    assert set(want.split()) <= flags_of("bench")


def test_one_default_per_knob():
    cfg = BenchConfig()
    assert (cfg.batch_sizes, cfg.max_length, cfg.device, cfg.quantize) == (
        [8, 32, 128],
        DEFAULT_MAX_LENGTH,
        "cpu",
        "none",
    )
    assert (cfg.repeats, cfg.warmup, cfg.pipeline, cfg.length_aware, cfg.baselines) == (
        7,
        2,
        True,
        True,
        "all",
    )
    assert set(DTYPE_NAMES) == set(DTYPES)  # the names the config accepts are those the bench converts


@pytest.fixture
def started(monkeypatch):
    """The BenchConfig `revmux bench --model M` hands run_bench (loading and timing are stubbed)."""
    seen: list[BenchConfig] = []

    def spy(model, texts, *, pairs=None, config=None, progress=False, **knobs):
        seen.append(config)
        raise ConfigError("stubbed: the bench stops here")

    monkeypatch.setattr(revmux.bench, "run_bench", spy)
    monkeypatch.setattr(revmux.bench, "bench_texts", lambda *a: (["a b"], None, "stub"))
    monkeypatch.setattr(revmux.cli.bench, "_bench_model", lambda *a: None)

    def run(*args: str) -> BenchConfig:
        result = runner.invoke(app, ["bench", "--model", "M", *args])
        assert result.exit_code == 2 and "stubbed" in result.output, result.output
        return seen.pop()

    return run


def _as_flag(name: str, typed) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(typed, bool):
        return [flag if typed else "--no-" + flag[2:]]
    return [flag, typed]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_flag_reaches_run_bench(name, started):
    typed, value = SETTINGS[name]
    cfg = started(*_as_flag(name, typed))
    assert getattr(cfg, name) == value != getattr(BenchConfig(), name)
    others = {f.name for f in dataclasses.fields(BenchConfig)} - {name}
    assert all(getattr(cfg, o) == getattr(BenchConfig(), o) for o in others)


def test_no_flag_gives_the_defaults(started):
    assert started() == BenchConfig()


@pytest.mark.parametrize(("args", "flag"), BAD, ids=lambda a: " ".join(a) if isinstance(a, list) else a)
def test_a_bad_value_is_refused_naming_its_flag(args, flag):
    result = runner.invoke(app, ["bench", "--model", "M", *args])
    assert result.exit_code == 2 and flag in " ".join(result.output.split()), result.output


def test_quantize_is_checked_when_the_command_line_is_parsed():
    result = runner.invoke(app, ["bench", "--quantize", "int4"])  # not even a model: a usage error first
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Invalid value for '--quantize'" in text and "none, int8, bf16" in text


def test_keywords_override_the_config_and_unknown_ones_are_refused():
    cfg = BenchConfig.resolve(BenchConfig(repeats=3, warmup=0), {"warmup": 1, "batch_sizes": (2,)})
    assert (cfg.repeats, cfg.warmup, cfg.batch_sizes) == (3, 1, [2])
    assert BenchConfig.resolve(None, {"dtype": torch.bfloat16}).dtype is torch.bfloat16
    assert BenchConfig.resolve(None, {"quantize": None, "baselines": ["int8"]}).quantize == "none"
    with pytest.raises(ConfigError, match=r"unknown keys \['repeat'\]"):
        run_bench(None, [], repeat=3)  # refused before the model is touched
    with pytest.raises(ConfigError, match="--repeats must be an integer >= 1"):
        run_bench(None, [], config=BenchConfig(), repeats=0)


@dataclass
class _Checked:
    """A test-only config whose `mode` flag is checked when the command line is parsed."""

    mode: str = field(default="a", metadata={"help": "a or b", "check": lambda v: _ab(v)})


def _ab(value: str) -> str:
    if value.lower() not in ("a", "b"):
        raise ConfigError(f"--mode must be a or b, got {value!r}.")
    return value.lower()


def test_config_flags_runs_a_fields_check_at_parse_time():
    got: list[dict] = []
    demo = typer.Typer()

    @demo.command()
    @config_flags(_Checked)
    def run(name: Annotated[str, typer.Option()] = "x", overrides: dict | None = None) -> None:
        got.append(overrides or {})

    @demo.command()
    def other() -> None:  # two commands: `run` is a subcommand, as in `revmux`
        """Unused."""

    assert runner.invoke(demo, ["run", "--mode", "B"]).exit_code == 0 and got.pop() == {"mode": "b"}
    assert runner.invoke(demo, ["run"]).exit_code == 0 and got.pop() == {}
    bad = runner.invoke(demo, ["run", "--mode", "c"])
    assert bad.exit_code == 2 and "Invalid value for '--mode'" in bad.output and not got
