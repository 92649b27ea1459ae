"""`revmux bench` and `revmux plot`: JSON shape, formulas and CLI contracts on a tiny BERT. Never a speed."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig
from typer.testing import CliRunner

from revmux.backbones import load_backbone
from revmux.bench import adapter_pass, run_bench, sorted_plain
from revmux.bench_inputs import PaddingWaste, bench_texts, padding_waste, sample_requests
from revmux.bench_result import BASELINES, BenchReport, BenchRun, peak_mb
from revmux.bench_timing import PeakMemory, Timing, cpu_matmul_isa, time_interleaved
from revmux.cli import app
from revmux.data import model_inputs
from revmux.errors import RevmuxError
from revmux.model import MuxModel
from revmux.plots import bench_task, frontier_panels, throughput_series
from revmux.runs import PREFILL_MAX_RUNS, PREFILL_MIN_ROWS_PER_RUN
from tests.scripts import benchmark_script

runner = CliRunner()
L = 3  # layers of the tiny model
RUN_KEYS = (
    "batch_size n k device threads plain_ms plain_ms_min plain_ms_max mux_ms mux_ms_min mux_ms_max "
    "pipeline_ms pipeline_ms_min pipeline_ms_max plain_rps pipeline_rps mux_rps speedup bound efficiency "
    "peak_rss_mb_plain peak_rss_mb_pipeline peak_rss_mb_mux padding_waste_plain padding_waste_mux "
    "plain_sorted_ms plain_sorted_rps speedup_vs_sorted speedup_vs_padded speedup_vs_best_plain"
).split()
META_KEYS = (
    "model model_type mux n k num_layers device threads max_length repeats torch_version machine date runs"
).split()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, minilm_path):
    """A 3-layer random BERT classifier (vocab 30522) saved with the real MiniLM tokenizer."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=L,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
    )
    path = tmp_path_factory.mktemp("tiny_bert")
    AutoModelForSequenceClassification.from_config(config).eval().save_pretrained(path)
    AutoTokenizer.from_pretrained(str(minilm_path)).save_pretrained(path)
    return path


def _model(tiny_dir, n: int = 2, k: int = 1) -> MuxModel:
    return MuxModel.from_backbone(
        load_backbone(tiny_dir), kind="revmux", n=n, k=k, backbone_path=str(tiny_dir)
    )


def _bench(tiny_dir, batch_sizes=(2, 4)) -> dict:
    texts, pairs, _ = bench_texts()
    report = run_bench(
        _model(tiny_dir), texts, pairs=pairs, batch_sizes=batch_sizes, repeats=2, warmup=1, max_length=32,
        baselines="none",
    )  # fmt: skip
    return json.loads(json.dumps(report.to_dict()))  # JSON-ready


def test_run_bench_json_shape_and_formulas(tiny_dir):
    d = _bench(tiny_dir)
    assert set(META_KEYS) <= set(d)
    assert (d["n"], d["k"], d["num_layers"], d["mux"], d["device"]) == (2, 1, L, "revmux", "cpu")
    assert d["model_type"] == "bert" and d["repeats"] == 2
    assert isinstance(d["machine"]["cpu_count"], int) and d["machine"]["platform"]
    assert d["machine"]["cpu_isa"] == cpu_matmul_isa()  # what decides the fast plain variant, on record
    assert "plain_rps" not in d  # two batch sizes: per-run keys stay in runs
    assert [r["batch_size"] for r in d["runs"]] == [2, 4]
    bound = L / (1 + (L - 1) / 2)
    for r in d["runs"]:
        assert set(RUN_KEYS) <= set(r)
        for key in set(RUN_KEYS) - {"device", "n", "k", "batch_size", "threads"}:
            assert isinstance(r[key], float), key
            assert r[key] > 0 or key.startswith("padding"), key
        assert all(isinstance(r[key], int) for key in ("n", "k", "batch_size", "threads"))
        assert r["speedup_vs_sorted"] == pytest.approx(r["plain_sorted_ms"] / r["mux_ms"])
        for v in ("plain", "plain_sorted", "pipeline", "mux"):
            assert r[f"{v}_ms_min"] <= r[f"{v}_ms"] <= r[f"{v}_ms_max"]
            assert r[f"{v}_rps"] == pytest.approx(r["batch_size"] / (r[f"{v}_ms"] / 1e3))
            assert peak_mb(r, v) > 0
        assert r["speedup"] == pytest.approx(r["plain_ms"] / r["mux_ms"]) == r["speedup_vs_padded"]
        assert r["bound"] == pytest.approx(bound)
        assert r["efficiency"] == pytest.approx(r["plain_sorted_ms"] / r["mux_ms"] / r["bound"])
        assert r["best_plain"] in ("plain", "plain_sorted") and r["efficiency_baseline"] == "plain_sorted"
        assert r["speedup_vs_best_plain"] == pytest.approx(r[f"{r['best_plain']}_ms"] / r["mux_ms"])
        assert 0.0 <= r["padding_waste_plain"] < 1.0 and 0.0 <= r["padding_waste_mux"] < 1.0
        assert r["padding_waste_mux"] == r["padding_waste_mux_length_aware"]
        assert isinstance(r["adapter_ms"], float) and r["adapter_ms"] > 0
        assert r["adapter_share"] == pytest.approx(r["adapter_ms"] / r["mux_ms"])
    assert d["compiled"] is False and "compile_seconds" not in d
    assert d["packed_tail"] is True  # a BERT view: the tail runs once over its runs packed side by side
    assert d["mux_run_cut"] == {"max_runs": PREFILL_MAX_RUNS, "min_rows_per_run": PREFILL_MIN_ROWS_PER_RUN}


def test_n1_has_no_adapter_timing(tiny_dir):
    texts, _, _ = bench_texts()
    report = run_bench(
        _model(tiny_dir, n=1), texts, batch_sizes=(2,), repeats=1, warmup=0, pipeline=False, baselines="none"
    )
    (run,) = report.runs
    assert run.adapters is None and run.adapter_ms is None and run.adapter_share is None
    assert run.rps("pipeline") is None and set(run.timings) == {"plain", "plain_sorted", "mux"}
    d = run.to_dict()
    assert d["adapter_ms"] is None and d["adapter_share"] is None and d["pipeline_rps"] is None


def test_sorted_plain_runs_length_sorted_cut_runs_with_the_same_answers(tiny_dir):
    model = _model(tiny_dir, n=2)
    texts, _, _ = bench_texts()
    enc = model.view.tokenizer(texts[:80], padding="longest", return_tensors="pt")
    batch = model_inputs(enc)
    widths = []
    hook = model.view.model.register_forward_pre_hook(
        lambda _m, _a, kw: widths.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        outs = sorted_plain(model, batch)()
    finally:
        hook.remove()
    # as many runs as the mux path: its prefill cut (the tail is packed), so 40 groups -> 4 runs of 20 requests
    assert len(outs) == model.run_count(40) == PREFILL_MAX_RUNS == 4
    lengths = batch["attention_mask"].sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    starts = range(0, 80, 20)
    assert widths == [(20, int(lengths[order][s])) for s in starts]  # each run cut at its longest request
    assert len(sorted_plain(model, batch, runs=8)()) == 8  # or as many as asked
    with torch.inference_mode():
        full = model.view.model(**batch).logits[order]
    torch.testing.assert_close(torch.cat([o.logits for o in outs]), full, atol=1e-5, rtol=1e-5)


def test_adapter_pass_runs_mux_and_demux_on_batch_shapes(tiny_dir):
    model = _model(tiny_dir, n=2)
    calls = []
    model.mux.register_forward_hook(lambda *_: calls.append("forward"))
    for name in ("mux", "demux"):
        fn = getattr(model.mux, name)
        setattr(
            model.mux, name, lambda x, _fn=fn, _name=name: calls.append((_name, tuple(x.shape))) or _fn(x)
        )
    out = adapter_pass(model, 6, 5, torch.device("cpu"))()
    assert [c for c in calls if c != "forward"] == [("mux", (3, 2, 5, 32)), ("demux", (3, 2, 32))]
    assert out.shape == (3, 2, 32)


def test_adapter_pass_times_the_adapters_the_forward_uses(tiny_dir):
    """On a bf16 backbone with bf16 adapters the forward runs a bf16 copy on bf16 states: so does the pass."""
    model = _model(tiny_dir, n=2)
    model.view.model.to(torch.bfloat16)
    model.adapter_precision = "backbone"
    out = adapter_pass(model, 6, 5, torch.device("cpu"))()
    assert out.dtype == torch.bfloat16 and out.shape == (3, 2, 32)
    model.adapter_precision = "fp32"  # the fp32 adapters themselves, states cast around them
    assert adapter_pass(model, 6, 5, torch.device("cpu"))().dtype == torch.bfloat16
    assert {p.dtype for p in model.mux.parameters()} == {torch.float32}


def test_compile_wraps_every_layer_and_needs_warmup(tiny_dir, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append((self, kw)))
    model = _model(tiny_dir)
    texts, _, _ = bench_texts()
    with pytest.raises(RevmuxError, match="warm-up"):
        run_bench(model, texts, batch_sizes=(2,), warmup=0, compile=True)
    report = run_bench(
        model, texts, batch_sizes=(2,), repeats=1, warmup=1, pipeline=False, compile=True, baselines="none"
    )
    assert [m for m, _ in compiled] == list(model.view.layer_modules())
    assert all(kw == {"dynamic": True} for _, kw in compiled)
    assert report.meta["compiled"] is True and report.meta["compile_seconds"] >= 0


def test_one_batch_size_puts_its_run_at_the_top(tiny_dir):
    d = _bench(tiny_dir, batch_sizes=(4,))
    assert len(d["runs"]) == 1
    for key in RUN_KEYS:
        assert d[key] == d["runs"][0][key], key


# The JSON keys of one run, in the order `revmux bench --out` writes them (CPU: peak_rss_mb_*).
RUN_JSON_KEYS = (
    "batch_size n k device threads seq_len mean_length texts_repeated "
    "plain_ms plain_ms_min plain_ms_max plain_rps peak_rss_mb_plain "
    "plain_sorted_ms plain_sorted_ms_min plain_sorted_ms_max plain_sorted_rps peak_rss_mb_plain_sorted "
    + "".join(f"{v}_ms {v}_ms_min {v}_ms_max {v}_rps peak_rss_mb_{v} " for v in BASELINES)
    + "pipeline_ms pipeline_ms_min pipeline_ms_max pipeline_rps peak_rss_mb_pipeline "
    "mux_ms mux_ms_min mux_ms_max mux_rps peak_rss_mb_mux "
    "mux_fallback_ms mux_fallback_ms_min mux_fallback_ms_max mux_fallback_rps peak_rss_mb_mux_fallback "
    + "".join(f"{v}_runs " for v in ("plain_sorted", *BASELINES, "mux"))
    + "speedup bound efficiency speedup_vs_sorted speedup_vs_padded best_plain speedup_vs_best_plain "
    "efficiency_baseline fallback_margin fallback_rerun_share speedup_vs_best_plain_fallback "
    "adapter_ms adapter_share "
    "padding_waste_plain padding_waste_mux slot_waste_mux "
    "padding_waste_mux_length_aware slot_waste_mux_length_aware "
    "padding_waste_mux_input_order slot_waste_mux_input_order"
).split()


def _run(**changes) -> BenchRun:
    timings = {
        "plain": Timing(ms=20.0, ms_min=19.0, ms_max=22.0, peak_mb=100.0),
        "plain_sorted": Timing(ms=16.0, ms_min=15.0, ms_max=17.0, peak_mb=101.0),
        "pipeline": Timing(ms=40.0, ms_min=39.0, ms_max=41.0, peak_mb=102.0),
        "mux": Timing(ms=12.5, ms_min=12.0, ms_max=13.0, peak_mb=103.0),
    }
    fields = dict(
        batch_size=8, n=2, k=1, device="cpu", threads=2, seq_len=30, mean_length=12.5,
        texts_repeated=False, timings=timings, adapters=Timing(1.25, 1.0, 1.5, 90.0), bound=1.5,
        padding_waste_plain=0.5, waste_length_aware=PaddingWaste(0.3, 0.1),
        waste_input_order=PaddingWaste(0.4, 0.2),
    )  # fmt: skip
    return BenchRun(**(fields | changes))


def test_bench_run_to_dict_writes_the_flat_json_keys_in_order():
    d = _run().to_dict()
    assert list(d) == RUN_JSON_KEYS
    assert (d["plain_ms"], d["plain_ms_min"], d["plain_ms_max"], d["peak_rss_mb_plain"]) == (20, 19, 22, 100)
    assert d["plain_rps"] == 8 / 0.020 and d["mux_rps"] == 8 / 0.0125 and d["pipeline_rps"] == 8 / 0.040
    assert (d["speedup"], d["bound"], d["efficiency"]) == (20 / 12.5, 1.5, 16 / 12.5 / 1.5)
    assert (d["speedup_vs_sorted"], d["adapter_ms"], d["adapter_share"]) == (16 / 12.5, 1.25, 0.1)
    assert (d["speedup_vs_padded"], d["best_plain"], d["speedup_vs_best_plain"]) == (
        20 / 12.5,
        "plain_sorted",
        16 / 12.5,
    )
    assert d["efficiency_baseline"] == "plain_sorted" and d["plain_int8_sorted_ms"] is None
    assert (d["padding_waste_mux"], d["slot_waste_mux"]) == (0.3, 0.1)  # length-aware grouping
    assert (d["padding_waste_mux_input_order"], d["slot_waste_mux_input_order"]) == (0.4, 0.2)
    order = _run(length_aware=False).to_dict()
    assert (order["padding_waste_mux"], order["slot_waste_mux"]) == (0.4, 0.2)
    cuda = _run(memory_key="peak_mem_mb", device="cuda:0").to_dict()
    assert list(cuda) == [key.replace("peak_rss_mb", "peak_mem_mb") for key in RUN_JSON_KEYS]
    assert peak_mb(cuda, "mux") == 103.0 == _run().peak_mb("mux")
    timings = {k: v for k, v in _run().timings.items() if k != "pipeline"}
    bare = _run(timings=timings, adapters=None).to_dict()
    assert list(bare) == RUN_JSON_KEYS
    assert [bare[f"pipeline_{s}"] for s in ("ms", "ms_min", "ms_max", "rps")] == [None] * 4
    assert bare["peak_rss_mb_pipeline"] is bare["adapter_ms"] is bare["adapter_share"] is None
    report = BenchReport(meta={"model": "m", "device": "?"}, runs=[_run()]).to_dict()
    assert report["device"] == "cpu" and report["runs"] == [d] and report["plain_rps"] == d["plain_rps"]


def test_report_runs_are_typed_and_match_their_json(tiny_dir):
    texts, pairs, _ = bench_texts()
    report = run_bench(
        _model(tiny_dir), texts, pairs=pairs, batch_sizes=(2, 4), repeats=1, warmup=0, max_length=32,
        baselines="none",
    )  # fmt: skip
    assert all(isinstance(r, BenchRun) for r in report.runs)
    for run, d in zip(report.runs, report.to_dict()["runs"], strict=True):
        assert list(d) == RUN_JSON_KEYS
        assert (d["batch_size"], d["mux_ms"], d["speedup"]) == (run.batch_size, run.ms("mux"), run.speedup)
        assert d["plain_rps"] == run.rps("plain") and d["adapter_share"] == run.adapter_share


def test_cpu_matmul_isa_names_the_flags_in_order_and_is_empty_without_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nflags\t\t: fpu amx_int8 avx2 avx512f amx_bf16 avx512_vnni\n\nflags : sse\n"
    )
    assert cpu_matmul_isa(info) == ["AVX2", "AVX512", "AVX512-VNNI", "AMX-BF16", "AMX-INT8"]  # first CPU only
    info.write_text("flags\t: fpu sse avx\n")
    assert cpu_matmul_isa(info) == []
    assert cpu_matmul_isa(tmp_path / "missing") == []


def test_time_interleaved_times_every_fn_per_round_and_reports_each_round():
    calls, rounds = [], []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    memory = PeakMemory(torch.device("cpu"))
    timed = time_interleaved(fns, repeats=3, warmup=2, memory=memory, on_round=lambda: rounds.append(1))
    assert calls == ["a", "b"] * 5 and len(rounds) == 5  # warm-up rounds included
    assert set(timed) == {"a", "b"} and all(isinstance(t, Timing) for t in timed.values())
    assert all(t.ms_min <= t.ms <= t.ms_max and t.peak_mb > 0 for t in timed.values())


def test_bench_progress_prints_plain_lines_when_stderr_is_not_a_terminal(tiny_dir, capsys):
    texts, _, _ = bench_texts()
    model = _model(tiny_dir)
    run_bench(
        model, texts, batch_sizes=(2, 4), repeats=2, warmup=1, pipeline=False, progress=True, baselines="none"
    )
    lines = capsys.readouterr().err.splitlines()
    summaries = [line for line in lines if line.startswith("batch ")]
    assert [line.split(":")[0] for line in summaries] == ["batch 2", "batch 4"]
    assert "pipeline n/a" in summaries[0] and "speedup" in summaries[0]
    final = [line for line in lines if line.startswith("bench: 6/6 (100%)")]
    assert len(final) == 1 and "rounds" in final[0] and "batch size 4" in final[0]


def test_padding_waste_counts_composite_and_slot_padding():
    lengths = [5, 1, 4, 2]
    mask = torch.tensor([[1] * n + [0] * (5 - n) for n in lengths])
    aware = padding_waste(mask, 2, length_aware=True)  # groups (5, 4), (2, 1)
    assert aware.composite == pytest.approx(1 - (5 + 2) / 10)
    assert aware.slot == pytest.approx(1 - 12 / (2 * 7))
    in_order = padding_waste(mask, 2, length_aware=False)  # groups (5, 1), (4, 2)
    assert in_order.composite == pytest.approx(1 - (5 + 4) / 10)
    assert in_order.slot == pytest.approx(1 - 12 / (2 * 9))
    odd = padding_waste(mask[:3], 2, length_aware=True)  # (5, 4) grouped, 1 runs plain
    assert odd.composite == pytest.approx(1 - (5 + 1) / 10)


def test_sample_requests_is_a_fixed_shuffle_and_cycles():
    texts = [f"t{i}" for i in range(5)]
    a, _, rep_a = sample_requests(texts, None, 4)
    b, _, _ = sample_requests(texts, None, 4)
    assert a == b and len(set(a)) == 4 and not rep_a
    c, pairs, rep_c = sample_requests(texts, texts, 7)
    assert rep_c and c[:5] == sample_requests(texts, None, 5)[0] and c[5:] == c[:2] and pairs == c


def test_cuda_without_cuda_names_the_problem(tiny_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RevmuxError, match="CUDA is not available"):
        run_bench(_model(tiny_dir), ["a b c"], batch_sizes=(2,), device="cuda")


def test_cli_bench_model_prints_one_json_object(tiny_dir, tmp_path):
    out = tmp_path / "b.json"
    args = ["bench", "--model", str(tiny_dir), "--n", "2", "--k", "1", "--mux", "revmux"]
    args += ["--batch-sizes", "4", "--repeats", "2", "--warmup", "1", "--max-length", "32", "--json"]
    args += ["--baselines", "none"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1
    d = json.loads(result.stdout)
    assert (d["n"], d["k"], d["batch_size"]) == (2, 1, 4)
    assert d["plain_rps"] > 0 and d["mux_rps"] > 0 and d["pipeline_rps"] > 0
    assert json.loads(out.read_text())["runs"] == d["runs"]


def test_cli_bench_adapter(tiny_dir, tmp_path):
    _model(tiny_dir, n=2, k=2).save_pretrained(tmp_path / "adapter")
    args = ["bench", "--adapter", str(tmp_path / "adapter"), "--batch-sizes", "2,4", "--repeats", "2"]
    args += ["--baselines", "none"]
    result = runner.invoke(app, [*args, "--warmup", "1", "--max-length", "32", "--no-pipeline", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert (d["n"], d["k"], d["adapter"]) == (2, 2, str(tmp_path / "adapter"))
    assert [r["pipeline_rps"] for r in d["runs"]] == [None, None]


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        ([], "--adapter"),  # neither
        (["--adapter", "x", "--model", "y"], "--adapter"),  # both
        (["--adapter", "x", "--n", "2"], "--n"),  # N comes from the adapter
        (["--model", "y", "--batch-sizes", "8,x"], "--batch-sizes"),
        (["--model", "y", "--batch-sizes", "0"], "--batch-sizes"),
    ],
)
def test_cli_bench_usage_errors_name_the_flag(extra, flag):
    result = runner.invoke(app, ["bench", *extra])
    assert result.exit_code == 2
    assert flag in result.output


def _synthetic_bench(n: int, k: int) -> dict:
    runs = [
        {
            "batch_size": bs,
            "n": n,
            "k": k,
            "plain_rps": 100.0 * bs,
            "mux_rps": 150.0 * bs,
            "peak_rss_mb_mux": 9.0,
        }
        for bs in (8, 32)
    ]
    return {"model": "tiny", "mux": "revmux", "n": n, "k": k, "runs": runs}


FRONTIER = [
    {"task": "sst2", "backbone": "minilm", "mux": "revmux", "n": 2, "k": 1, "accuracy_mean": 0.88,
     "teacher_accuracy": 0.91, "bound": 1.71, "recipe": "a"},
    {"task": "sst2", "backbone": "minilm", "mux": "revmux", "n": 4, "k": 1, "accuracy_mean": 0.84,
     "teacher_accuracy": 0.91, "bound": 2.67, "recipe": "a"},
    {"task": "sst2", "backbone": "minilm", "mux": "revmux", "n": 2, "k": 1, "accuracy_mean": 0.90,
     "teacher_accuracy": 0.91, "bound": 1.71, "recipe": "b"},
    {"task": "sst2", "backbone": "minilm", "mux": "revmux", "n": 4, "k": 3, "accuracy_mean": 0.90,
     "teacher_accuracy": 0.91, "bound": 1.71, "recipe": "b"},
    {"task": "rte", "backbone": "minilm", "mux": "ora", "n": 2, "k": 2, "accuracy_mean": 60.0,
     "teacher_accuracy": 65.0, "bound": 1.5},
]  # fmt: skip


def _honest(
    n: int, k: int, *, task_path: str = "/x/SST-2/dev.tsv", quantize: str = "none", mux_rps: float = 300.0
):
    """A `revmux bench` report with the honest baselines, one run at batch 128."""
    run = {
        "batch_size": 128,
        "n": n,
        "k": k,
        "plain_rps": 50.0,
        "mux_rps": mux_rps,
        "speedup_vs_best_plain": 1.2,
    }
    run |= {"plain_sorted_rps": 100.0, "plain_int8_sorted_rps": 150.0, "plain_bf16_sorted_rps": 20.0}
    run |= {"ort_int8_sorted_rps": 250.0, "efficiency": 0.8, "best_plain": "ort_int8_sorted"}
    return {"model": "minilm", "mux": "revmux", "dtype": "float32", "quantize": quantize, "backend": "torch",
            "texts": task_path, "runs": [run]}  # fmt: skip


def test_plot_series_without_matplotlib():
    series = throughput_series([_synthetic_bench(2, 1), _synthetic_bench(4, 1)], "grid")
    assert [s.label for s in series] == ["grid plain", "grid revmux N=2 k=1", "grid revmux N=4 k=1"]
    assert series[0].x == [8, 32] and series[0].y == [800.0, 3200.0] and series[0].dashed
    reports = [_honest(2, 1, mux_rps=200.0), _honest(4, 1), _honest(4, 1, quantize="int8", mux_rps=999.0)]
    (rte, sst2) = frontier_panels(FRONTIER, reports, batch=128)  # sorted by backbone, task
    assert (sst2.backbone, sst2.task, rte.task) == ("minilm", "sst2", "rte")
    two, four = sst2.series  # kind revmux: recipe a has two timed cells, b only one; one line per N
    assert two.label == four.label == "revmux (a)" and (two.n, four.n) == (2, 4)
    assert two.x == [200.0] and four.x == [300.0]  # fp32 timings only, never the int8 one
    assert two.y + four.y == pytest.approx([-3.0, -7.0]) and two.notes + four.notes == ["N=2,k=1", "N=4,k=1"]
    assert sst2.untimed == ["revmux N=4,k=3 (b)"]
    assert sst2.plain == {
        "plain_sorted": 100.0,
        "plain_int8_sorted": 150.0,
        "ort_int8_sorted": 250.0,
    }  # no bf16
    assert rte.series == [] and rte.untimed == ["ora N=2,k=2 (default)"]  # no timing of RTE texts
    (_, preferred) = frontier_panels(FRONTIER, reports, batch=128, prefer=["c", "b"])  # no c: b, fewer cells
    (line,) = preferred.series  # b has no timed N=4 cell, and a is not preferred: no N=4 line
    assert (line.label, line.x, line.y, line.notes) == (
        "revmux (b)",
        [200.0],
        pytest.approx([-1.0]),
        ["N=2,k=1"],
    )
    (_, preferred) = frontier_panels(FRONTIER, reports, batch=128, prefer=["b", "a"])
    line, filled = preferred.series  # b has no timed N=4 cell: that line comes from a, the next preferred
    assert (filled.label, filled.n, filled.y) == ("revmux (a)", 4, pytest.approx([-7.0]))
    assert (line.label, line.x, line.y, line.notes) == (
        "revmux (b)",
        [200.0],
        pytest.approx([-1.0]),
        ["N=2,k=1"],
    )
    assert bench_task(_honest(2, 2, task_path="/d/glue/RTE/dev.tsv")) == "rte"
    assert bench_task({"texts": "/elsewhere/mine.txt"}) is None


def test_cli_plot_writes_pngs(tmp_path):
    one, grid, frontier = tmp_path / "one.json", tmp_path / "grid.json", tmp_path / "frontier.json"
    one.write_text(json.dumps(_synthetic_bench(2, 1)))
    grid.write_text(json.dumps({"reports": [_honest(2, 1), _honest(4, 1)]}))
    frontier.write_text(json.dumps(FRONTIER))
    args = ["plot", "--bench", str(one), "--bench", str(grid), "--frontier", str(frontier)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    for name in ("throughput.png", "frontier.png"):
        assert (tmp_path / "figs" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    untimed = runner.invoke(
        app, ["plot", "--bench", str(one), "--frontier", str(frontier), "--out", str(tmp_path)]
    )
    assert untimed.exit_code == 2 and "no frontier row has a measured timing" in " ".join(
        untimed.output.split()
    )


def test_cli_plot_errors(tmp_path, monkeypatch):
    bad = tmp_path / "frontier.json"
    bad.write_text(json.dumps([{"task": "sst2"}]))
    result = runner.invoke(app, ["plot", "--frontier", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "accuracy_mean" in result.output
    assert runner.invoke(app, ["plot", "--out", str(tmp_path)]).exit_code == 2
    good = tmp_path / "one.json"
    good.write_text(json.dumps(_synthetic_bench(2, 1)))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    result = runner.invoke(app, ["plot", "--bench", str(good), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "pip install matplotlib" in " ".join(result.output.split())


def test_fallback_margin_times_the_mux_with_its_fallback_beside_the_rest(tiny_dir):
    from revmux.fallback import forward_with_fallback

    model = _model(tiny_dir)
    for p in model.mux.parameters():  # adapters far from identity: the mux's answers differ from N = 1's
        torch.nn.init.normal_(p, std=0.5)
    texts, pairs, _ = bench_texts()
    batch = model.encoder.tokenize(texts[:9], pairs, device=torch.device("cpu"))
    with torch.inference_mode():
        muxed = model(batch, length_aware=True)
        alone = model.teacher_from_prefill(model.prefill(batch))[1]
        none, rerun_none = forward_with_fallback(model, batch, 0.0)
        every, rerun_all = forward_with_fallback(model, batch, 1.0)
        half, rerun_half = forward_with_fallback(model, batch, 0.5)
    torch.testing.assert_close(none, muxed, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(every, alone, atol=1e-5, rtol=1e-4)
    assert not rerun_none.any() and rerun_all.all()
    probs = muxed.softmax(-1).sort(-1, descending=True).values
    assert rerun_half.tolist() == ((probs[:, 0] - probs[:, 1]) < 0.5).tolist()
    torch.testing.assert_close(half, torch.where(rerun_half.unsqueeze(1), alone, muxed), atol=1e-5, rtol=1e-4)

    report = run_bench(
        model, texts, pairs=pairs, batch_sizes=(4,), repeats=1, warmup=0, max_length=32, baselines="none",
        pipeline=False, fallback_margin=1.0,
    )  # fmt: skip
    (r,) = json.loads(json.dumps(report.to_dict()))["runs"]
    assert r["fallback_margin"] == 1.0 and r["fallback_rerun_share"] == 1.0 and r["mux_fallback_ms"] > 0
    assert r["speedup_vs_best_plain_fallback"] == pytest.approx(
        r[f"{r['best_plain']}_ms"] / r["mux_fallback_ms"]
    )
    plain = json.loads(
        json.dumps(
            run_bench(
                model,
                texts,
                pairs=pairs,
                batch_sizes=(4,),
                repeats=1,
                warmup=0,
                max_length=32,
                baselines="none",
                pipeline=False,
            ).to_dict()
        )
    )
    (p,) = plain["runs"]
    assert p["mux_fallback_ms"] is None and p["fallback_rerun_share"] is None


def test_run_cut_grid_times_each_cut_against_every_plain_run_count(tiny_dir, tmp_path, monkeypatch):
    """benchmarks/run_cut_grid.py: one row per cut, its run count as the model computes it, and the speedup
    against the fastest of the plain run counts the bench tries."""
    module = benchmark_script("run_cut_grid", monkeypatch)
    out = tmp_path / "cuts.json"
    args = ["--model", str(tiny_dir), "--n", "2", "--k", "1", "--quantize", "none", "--backend", "torch"]
    args += [
        "--cuts",
        "1,4/4,4",
        "--batch-sizes",
        "16",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--max-length",
        "32",
    ]
    module.main([*args, "--json", str(out)])
    d = json.loads(out.read_text())
    assert d["meta"]["command"].endswith("--repeats 1 --warmup 0 --max-length 32 --json " + str(out))
    assert [(r["cut"], r["mux_runs"]) for r in d["rows"]] == [([1, 4], 1), ([4, 4], 4)]
    for r in d["rows"]:
        assert set(r["plain_ms"]) == {"plain1", "plain2", "plain4"} and r["plain_variant"] == "plain_sorted"
        assert r["speedup_vs_best_plain"] == pytest.approx(min(r["plain_ms"].values()) / r["mux_ms"])
        assert r["efficiency"] == pytest.approx(r["speedup_vs_best_plain"] / r["bound"])
    with pytest.raises(SystemExit, match="--n and --k pair up"):
        module.main(["--model", str(tiny_dir), "--n", "2,4", "--k", "1"])
