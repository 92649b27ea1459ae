"""The plain baselines of `revmux bench` (torch int8 / bf16 and ONNX Runtime, length-sorted) and
`--quantize`: JSON shape and formulas at tiny size. Never a speed."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import revmux.bench_baselines as bench_baselines
from revmux.backbones.quantize import SMOOTH_ALPHA, int8_smoothing, quantized_mode
from revmux.bench import BASELINES, PLAIN_VARIANTS, parse_baselines, run_bench
from revmux.bench_inputs import bench_texts
from revmux.cli import app
from revmux.errors import ConfigError
from revmux.onnx_backend import ort_unavailable
from tests.test_bench import _model, tiny_dir  # noqa: F401  (tiny_dir is a fixture)

runner = CliRunner()
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def _run(model, **kw) -> dict:
    texts, pairs, _ = bench_texts()
    kw = {"batch_sizes": (4,), "repeats": 1, "warmup": 0, "max_length": 32, "pipeline": False} | kw
    return json.loads(json.dumps(run_bench(model, texts, pairs=pairs, **kw).to_dict()))


def test_every_baseline_is_timed_with_its_keys_and_the_best_plain(tiny_dir, monkeypatch):  # noqa: F811
    monkeypatch.setattr(bench_baselines, "native_bf16", lambda device_type: True)  # as on AMX or CUDA
    d = _run(_model(tiny_dir))
    timed = list(BASELINES) if HAS_ORT else ["plain_int8_sorted", "plain_bf16_sorted"]
    assert d["baselines"] == timed and d["quantize"] == "none" and d["efficiency_baseline"] == "plain_sorted"
    (r,) = d["runs"]
    for v in timed:
        assert isinstance(r[f"{v}_ms"], float) and r[f"{v}_ms"] > 0, v
        assert r[f"{v}_ms_min"] <= r[f"{v}_ms"] <= r[f"{v}_ms_max"]
        assert r[f"{v}_rps"] == pytest.approx(r["batch_size"] / (r[f"{v}_ms"] / 1e3))
        assert r[f"peak_rss_mb_{v}"] > 0
    fastest = min((v for v in PLAIN_VARIANTS if r[f"{v}_ms"] is not None), key=lambda v: r[f"{v}_ms"])
    assert r["best_plain"] == fastest
    assert r["speedup_vs_best_plain"] == pytest.approx(r[f"{fastest}_ms"] / r["mux_ms"])
    assert r["speedup_vs_best_plain"] <= r["speedup_vs_sorted"] and r["speedup_vs_best_plain"] <= r["speedup"]
    assert r["speedup_vs_padded"] == r["speedup"] == pytest.approx(r["plain_ms"] / r["mux_ms"])
    assert r["efficiency"] == pytest.approx(r["plain_sorted_ms"] / r["mux_ms"] / r["bound"])
    if not HAS_ORT:
        assert any("ort_fp32_sorted and ort_int8_sorted skipped" in note for note in d["notes"])
        assert r["ort_int8_sorted_ms"] is None and r["ort_fp32_sorted_rps"] is None


def test_bf16_baseline_is_skipped_with_a_note_where_bf16_is_only_emulated(tiny_dir, monkeypatch):  # noqa: F811
    monkeypatch.setattr(bench_baselines, "native_bf16", lambda device_type: False)  # e.g. an AVX2-only CPU
    d = _run(_model(tiny_dir), baselines="int8,bf16")
    assert d["baselines"] == ["plain_int8_sorted"]
    assert d["runs"][0]["plain_bf16_sorted_ms"] is None
    skipped = "plain_bf16_sorted skipped: this CPU has no native bf16"
    assert any(note.startswith(skipped) for note in d["notes"])
    forced = _run(_model(tiny_dir), baselines="none", quantize="bf16")  # the mux's precision: always timed
    assert forced["baselines"] == ["plain_bf16_sorted"] and forced["runs"][0]["plain_bf16_sorted_ms"] > 0


def test_quantize_int8_runs_the_mux_on_an_int8_copy_and_takes_efficiency_against_it(
    tiny_dir,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    model = _model(tiny_dir)
    used = []
    on_view = bench_baselines.on_view
    monkeypatch.setattr(bench_baselines, "on_view", lambda m, v: used.append(on_view(m, v)) or used[-1])
    d = _run(model, baselines="none", quantize="int8")
    assert d["baselines"] == ["plain_int8_sorted"]  # the mux's own precision is always timed
    assert (d["quantize"], d["efficiency_baseline"]) == ("int8", "plain_int8_sorted")
    r = d["runs"][0]
    assert r["efficiency"] == pytest.approx(r["plain_int8_sorted_ms"] / r["mux_ms"] / r["bound"])
    assert r["plain_bf16_sorted_ms"] is None and r["ort_fp32_sorted_ms"] is None
    (mux,) = used
    assert quantized_mode(mux.view) == "int8" and mux.mux is model.mux and mux.config is model.config
    # the mux runs on revmux's smoothed int8, timed against torch's plain dynamic int8 as a user gets it
    assert d["int8_smooth"] == SMOOTH_ALPHA == int8_smoothing(mux.view)
    base = bench_baselines.build_baselines(
        model.view, ["plain_int8_sorted"], "int8", tmp_path, ("input_ids",)
    )
    assert int8_smoothing(base.views["plain_int8_sorted"]) is None
    assert quantized_mode(model.view) == "none"  # plain and plain_sorted stay on the fp32 backbone
    assert all(p.dtype == torch.float32 for p in model.mux.parameters())


def test_skipped_baselines_leave_a_note_never_an_error(tiny_dir, monkeypatch):  # noqa: F811
    monkeypatch.setattr("revmux.onnx_backend.ort_unavailable", lambda view: "onnxruntime is not installed")
    d = _run(_model(tiny_dir), baselines="ort_fp32,int8")
    assert d["baselines"] == ["plain_int8_sorted"]
    assert "ort_fp32_sorted skipped: onnxruntime is not installed" in d["notes"]
    assert d["runs"][0]["ort_fp32_sorted_ms"] is None and d["runs"][0]["best_plain"] in PLAIN_VARIANTS
    decoder = SimpleNamespace(
        verbalizer_ids=[5, 6], causal=True, reads_all_positions=False, model_type="llama"
    )
    decoder.device = torch.device("cpu")
    assert ort_unavailable(decoder) is not None and (
        not HAS_ORT or "encoder classifiers" in ort_unavailable(decoder)
    )


def test_parse_baselines_and_bad_values_name_the_choices(tiny_dir):  # noqa: F811
    assert parse_baselines("all") == parse_baselines(None) == list(BASELINES)
    assert parse_baselines("none") == [] == parse_baselines("")
    assert parse_baselines("ort_int8, int8") == ["plain_int8_sorted", "ort_int8_sorted"]
    assert parse_baselines(["plain_bf16_sorted"]) == ["plain_bf16_sorted"]
    with pytest.raises(ConfigError, match="--baselines takes 'all', 'fastest', 'none' or a comma list"):
        parse_baselines("int4")
    with pytest.raises(ConfigError, match="--quantize must be one of none, int8, bf16"):
        _run(_model(tiny_dir), quantize="int4")


@pytest.mark.parametrize("native", [True, False])
def test_fastest_baselines_drop_ort_fp32_and_emulated_bf16(tiny_dir, monkeypatch, native):  # noqa: F811
    monkeypatch.setattr(bench_baselines, "native_bf16", lambda device_type: native)
    model = _model(tiny_dir)
    want = (
        ["plain_int8_sorted", "plain_bf16_sorted", "ort_int8_sorted"]
        if native
        else ["plain_int8_sorted", "ort_int8_sorted"]
    )
    assert parse_baselines("fastest", model.view) == want
    assert parse_baselines("fastest") == list(BASELINES)  # checking the flag alone: nothing is dropped yet
    d = _run(model, baselines="fastest")
    assert d["baselines"] == (want if HAS_ORT else [v for v in want if not v.startswith("ort_")])
    r = d["runs"][0]
    assert r["ort_fp32_sorted_ms"] is None
    assert r["best_plain"] == min(
        (v for v in PLAIN_VARIANTS if r[f"{v}_ms"] is not None), key=lambda v: r[f"{v}_ms"]
    )


def test_cli_bench_quantize_int8_prints_the_honest_fields(tiny_dir):  # noqa: F811
    args = ["bench", "--model", str(tiny_dir), "--n", "4", "--k", "1", "--quantize", "int8"]
    args += ["--baselines", "int8", "--batch-sizes", "8", "--repeats", "1", "--warmup", "0"]
    result = runner.invoke(app, [*args, "--max-length", "32", "--no-pipeline", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert (d["n"], d["k"], d["quantize"], d["baselines"]) == (4, 1, "int8", ["plain_int8_sorted"])
    for key in ("plain_int8_sorted_ms", "plain_int8_sorted_rps", "efficiency", "best_plain"):
        assert d[key] is not None, key
    assert d["speedup_vs_best_plain"] > 0 and d["speedup_vs_padded"] == d["speedup"]
    tvm = runner.invoke(app, ["bench", "--model", str(tiny_dir), "--backend", "tvm", "--baselines", "none"])
    assert tvm.exit_code == 2 and "--backend must be one of torch, onnx" in " ".join(tvm.output.split())
    bad = runner.invoke(app, ["bench", "--model", str(tiny_dir), "--quantize", "int4"])
    assert bad.exit_code == 2 and "--quantize must be one of none, int8, bf16" in " ".join(bad.output.split())


def test_plain_run_choices_keep_at_least_four_requests_per_run():
    assert bench_baselines.plain_run_choices(4) == [1]
    assert bench_baselines.plain_run_choices(32) == [1, 2, 4, 8]
    assert bench_baselines.plain_run_choices(128) == [1, 2, 4, 8, 16]


def test_the_fastest_run_count_is_the_one_kept(monkeypatch):
    import time

    from revmux.bench import _fastest_runs
    from revmux.bench_timing import PeakMemory

    def make(runs):
        return lambda: time.sleep(0 if runs == 4 else 0.003)

    assert _fastest_runs(make, 32, PeakMemory(torch.device("cpu"))) == 4
    assert _fastest_runs(make, 4, PeakMemory(torch.device("cpu"))) == 1  # one choice: nothing timed


@pytest.mark.parametrize("plain_runs", ["best", "mux"])
def test_each_sorted_variant_reports_its_run_count(tiny_dir, plain_runs):  # noqa: F811
    model = _model(tiny_dir)
    d = _run(model, batch_sizes=(16,), baselines="int8", plain_runs=plain_runs)
    (r,) = d["runs"]
    assert d["plain_runs"] == plain_runs
    assert r["mux_runs"] == model.run_count(16 // model.n)
    for v in ("plain_sorted", "plain_int8_sorted"):
        if plain_runs == "mux":
            assert r[f"{v}_runs"] == r["mux_runs"]
        else:
            assert r[f"{v}_runs"] in bench_baselines.plain_run_choices(16)
    assert r["ort_int8_sorted_runs"] is None  # not timed


def test_plain_runs_takes_best_or_mux_only(tiny_dir):  # noqa: F811
    with pytest.raises(ConfigError, match="--plain-runs must be best or mux"):
        _run(_model(tiny_dir), plain_runs="fastest")
