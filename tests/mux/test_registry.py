"""revmux.mux.registry: a knob written once in a kind's options dataclass reaches every entry point.

A test-only kind ("scaled-test": the vanilla adapter whose composite is multiplied by a `gain` option)
is registered with one decorator; its new field then travels through `revmux train --mux-option`, the
TrainConfig, the saved MuxConfig, `MuxModel.from_pretrained` (eval and predict), `revmux bench
--model` and the serving pack, with no edit anywhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch
from typer.testing import CliRunner

from revmux.cli import app
from revmux.config import config_from_dict
from revmux.errors import ConfigError
from revmux.model import MuxModel
from revmux.mux import MUX_KINDS, build_mux, register_mux, resolve_options
from revmux.mux.baselines import MLPDemuxOptions, VanillaAdapter
from revmux.mux.registry import options_help
from revmux.serve.config import ServeConfig
from revmux.serve.pack import load_pack
from revmux.train.config import TrainConfig
from tests.train import toy_task, toy_view


@dataclass
class ScaledOptions(MLPDemuxOptions):
    gain: float = field(default=1.0, metadata={"help": "factor on the composite"})


class ScaledAdapter(VanillaAdapter):
    kind = "scaled-test"
    Options = ScaledOptions

    def mux(self, h: torch.Tensor) -> torch.Tensor:
        return super().mux(h) * self.options.gain


@pytest.fixture
def scaled_kind():
    register_mux(ScaledAdapter)
    yield ScaledAdapter.kind
    del MUX_KINDS[ScaledAdapter.kind]


def test_options_are_checked_converted_and_listed(scaled_kind):
    assert resolve_options(scaled_kind, {"gain": "2.5"}) == {"f_hidden": None, "up_hidden": None, "gain": 2.5}
    assert build_mux(scaled_kind, 2, 16, gain="3").options.gain == 3.0
    with pytest.raises(ConfigError, match=r"does not take option\(s\) \['gian'\].*'gain'"):
        build_mux(scaled_kind, 2, 16, gian=3)
    with pytest.raises(ConfigError, match="gain takes a number"):
        build_mux(scaled_kind, 2, 16, gain="loud")
    assert (
        "scaled-test: f_hidden=None" in options_help()
        and "gain=1.0 (factor on the composite)" in options_help()
    )
    assert TrainConfig(kind=scaled_kind, mux_options={"gain": 2}).mux_options["gain"] == 2.0


def test_a_new_option_reaches_train_eval_bench_and_serve(scaled_kind, minilm_path, tmp_path, monkeypatch):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    view, data = toy_view(minilm_path), toy_task(rows=64)
    teacher = tmp_path / "teacher"
    view.model.save_pretrained(teacher)
    view.tokenizer.save_pretrained(teacher)
    rows = zip(data.texts, data.labels, strict=True)
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    out = tmp_path / "adapter"
    args = ["train", "--teacher", str(teacher), "--train", str(tmp_path / "toy.jsonl"), "--out", str(out)]
    args += [
        "--mux",
        scaled_kind,
        "--mux-option",
        "gain=3",
        "--k",
        "1",
        "--epochs",
        "1",
        "--min-steps",
        "0",
        "--batch-groups",
        "8",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    assert json.loads((out / "train_log.json").read_text())["config"]["mux_options"]["gain"] == 3.0
    assert json.loads((out / "mux_config.json").read_text())["options"]["gain"] == 3.0
    loaded = MuxModel.from_pretrained(out, view)  # what eval, predict and bench --adapter load
    assert isinstance(loaded.mux, ScaledAdapter) and loaded.mux.options.gain == 3.0
    result = CliRunner().invoke(app, ["eval", "--adapter", str(out), "--eval", str(tmp_path / "toy.jsonl")])
    assert result.exit_code == 0, result.output

    pack = load_pack(adapter=out, model=teacher)  # what `revmux serve` and the Ray app run
    assert pack.models[2].mux.options.gain == 3.0
    assert ServeConfig.from_dict({}).max_length is None  # the server takes the adapter's own settings

    bench = ["bench", "--model", str(teacher), "--mux", scaled_kind, "--mux-option", "gain=0.5", "--k", "1"]
    bench += ["--batch-sizes", "4", "--repeats", "1", "--warmup", "0", "--no-pipeline", "--json"]
    bench += ["--texts", str(_texts(tmp_path, data.texts[:8]))]
    result = CliRunner().invoke(app, bench)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["mux_options"]["gain"] == 0.5


def test_config_from_dict_converts_by_field_type():
    cfg = config_from_dict(
        ServeConfig, {"port": "9000", "widths": "1,2", "width_thresholds": "2:8"}, source="t"
    )
    assert (cfg.port, cfg.widths, cfg.width_thresholds) == (9000, [1, 2], {2: 8})
    with pytest.raises(ConfigError, match=r"unknown keys \['prot'\]"):
        config_from_dict(ServeConfig, {"prot": 1}, source="t")
    with pytest.raises(ConfigError, match="--port takes an integer, got 'x'"):
        config_from_dict(ServeConfig, {"port": "x"}, source="t")


def _texts(tmp_path, texts):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n")
    return path
