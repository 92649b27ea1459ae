"""BenchConfig: the timing knobs of `revmux bench` and `revmux.bench.run_bench`, each written once.

Each field carries its default and its help (`metadata["help"]`): `revmux bench` derives one flag per
field from it (`--batch-sizes`, `--no-pipeline`, `--quantize`, ...) through `revmux.config_flags`, and
`run_bench(model, texts, config=..., **knobs)` takes the same names as keywords. Values are checked in
`__post_init__`, with errors naming the flag. What it is not: the model or the requests to time (those
are `revmux bench`'s --adapter/--model and --task/--texts), nor a check of the machine (whether CUDA is
there is asked when the bench runs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from revmux.config import DEFAULT_MAX_LENGTH, config_from_dict, dashed, resolve_config
from revmux.config import flag_meta as _meta
from revmux.config import is_int as _is_int
from revmux.errors import ConfigError

PLAIN_RUNS = ("best", "mux")  # --plain-runs: each sorted plain variant at its fastest run count, or the mux's
DTYPE_NAMES = ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16")  # revmux.bench.DTYPES' keys


def check_quantize(value: str | None) -> str:
    """--quantize as one of none, int8, bf16 (None: none); ConfigError naming the choices otherwise."""
    from revmux.backbones.quantize import check_quantize_mode

    return check_quantize_mode(value)


@dataclass
class BenchConfig:
    """How `run_bench` times plain and multiplexed inference (the same knobs as `revmux bench`'s flags)."""

    batch_sizes: list[int] = field(
        default_factory=lambda: [8, 32, 128], metadata=_meta("batch sizes timed, comma-separated")
    )
    max_length: int = field(
        default=DEFAULT_MAX_LENGTH, metadata=_meta("tokens per request (longer are truncated)")
    )
    device: str = field(default="cpu", metadata=_meta("cpu or cuda (or cuda:N)"))
    dtype: str | None = field(
        default=None,
        metadata=_meta("backbone dtype: fp32, bf16 or fp16 (adapters stay fp32)", default="as loaded"),
    )  # the library also takes a torch.dtype
    threads: int | None = field(
        default=None, metadata=_meta("torch.set_num_threads for the run", default="torch's")
    )
    repeats: int = field(default=7, metadata=_meta("timed rounds; the median is reported"))
    warmup: int = field(default=2, metadata=_meta("untimed rounds first"))
    length_aware: bool = field(default=True, metadata=_meta("group requests of similar length"))
    pipeline: bool = field(default=True, metadata=_meta("also time transformers.pipeline"))
    compile: bool = field(
        default=False, metadata=_meta("torch.compile the backbone layers (plain and mux alike) first")
    )
    baselines: str = field(  # the library also takes a list of names (revmux.bench.parse_baselines)
        default="all",
        metadata=_meta(
            "plain baselines also timed, length-sorted: 'all', 'fastest' (all but ort_fp32, never the "
            "fastest; bf16 where native), 'none' or a comma list of int8, bf16, "
            "ort_fp32, ort_int8 (ONNX Runtime ones need the onnx extra; those that cannot run are noted)"
        ),
    )
    quantize: str = field(
        default="none",
        metadata=_meta(
            "run the mux on the backbone in none, int8 (torch dynamic, CPU) or bf16; adapters stay fp32",
            check=check_quantize,
        ),
    )
    backend: str = field(
        default="torch",
        metadata=_meta(
            "where the mux's backbone layers run: torch, or onnx (ONNX Runtime, fp32 or with --quantize "
            "int8; adapters in torch; needs the onnx extra)"
        ),
    )
    plain_runs: str = field(
        default="best",
        metadata=_meta(
            "how each length-sorted plain variant cuts a batch into runs: best (its fastest of 1, 2, 4, 8, 16 "
            "runs, timed first) or mux (as many runs as the mux)"
        ),
    )
    seed: int = field(default=0, metadata=_meta("seed of the fixed shuffle that picks each batch's requests"))
    fallback_margin: float | None = field(
        default=None,
        metadata=_meta(
            "also time the mux with the confidence fallback at this margin (answers whose top-1 minus top-2 "
            "probability is below it re-run alone from their layer-k states, as the server does)",
            default="off",
        ),
    )

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> ConfigError:
            return ConfigError(f"{dashed(name)} must be {want}, got {getattr(self, name)!r}.")

        sizes = self.batch_sizes
        if not isinstance(sizes, list) or not sizes or any(not _is_int(b) or b < 1 for b in sizes):
            raise ConfigError(f"--batch-sizes takes integers >= 1 like 8,32,128; got {sizes!r}.")
        for name, low in {"max_length": 2, "repeats": 1, "warmup": 0}.items():
            if not _is_int(getattr(self, name)) or getattr(self, name) < low:
                raise bad(name, f"an integer >= {low}")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise bad("threads", "an integer >= 1 or unset")
        if not _is_int(self.seed):
            raise bad("seed", "an integer")
        margin = self.fallback_margin
        if margin is not None and (
            isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 1
        ):
            raise bad("fallback_margin", "a probability margin in [0, 1] or unset")
        for name in ("length_aware", "pipeline", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"--device must be cpu or cuda (or cuda:N), got {self.device!r}.")
        if isinstance(self.dtype, str) and self.dtype.lower() not in DTYPE_NAMES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPE_NAMES)}, got {self.dtype!r}.")
        self.quantize = check_quantize(self.quantize)
        if self.plain_runs not in PLAIN_RUNS:
            raise ConfigError(f"--plain-runs must be best or mux, got {self.plain_runs!r}.")
        self._check_backends()

    def _check_backends(self) -> None:
        """--baselines names, --backend with --quantize, and --compile with both and with --warmup."""
        from revmux.bench_baselines import efficiency_baseline, parse_baselines

        parse_baselines(self.baselines)
        efficiency_baseline(self.quantize, self.backend)
        if self.compile and (self.quantize != "none" or self.backend != "torch"):
            flag = f"--quantize {self.quantize}" if self.quantize != "none" else f"--backend {self.backend}"
            raise ConfigError(
                f"--compile and {flag} cannot be combined: the mux's quantized or exported backbone is not "
                "compiled. Drop one of them."
            )
        if self.compile and self.warmup < 1:
            raise ConfigError("--compile needs at least one warm-up round (--warmup >= 1) to compile in.")

    def to_dict(self) -> dict[str, Any]:
        """The fields as given (a torch.dtype stays one)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "bench config") -> BenchConfig:
        """Built by the shared loader: unknown keys refused, strings converted ("8,32" -> [8, 32])."""
        return config_from_dict(cls, data, source=source)

    @classmethod
    def resolve(
        cls, config: BenchConfig | None, knobs: Mapping[str, Any], source: str = "run_bench"
    ) -> BenchConfig:
        """`config` (default: the defaults) with `knobs` (field name -> value) over it."""
        return resolve_config(cls, config, knobs, source=source)
