"""EvalConfig: the knobs of `revmux eval` and `revmux.evaluate.evaluate`, each written once.

Each field carries its default and its help (`metadata["help"]`): `revmux eval` derives one flag per
field from it (`--groupings`, `--fallback-margin`, `--quantize`, ...) through `revmux.config_flags`, and
`evaluate(model, data, config=..., **knobs)` takes the same names as keywords. Values are checked in
`__post_init__`, with errors naming the flag. What it is not: the adapter or the data to evaluate
(`revmux eval`'s --adapter/--model and --task/--eval), nor training's hold-out selection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from revmux.bench_config import check_quantize
from revmux.config import config_from_dict, dashed, resolve_config
from revmux.config import flag_meta as _help
from revmux.config import is_int as _is_int
from revmux.errors import ConfigError


@dataclass
class EvalConfig:
    """How `evaluate` measures an adapter: groupings, batching, and the optional partner checks."""

    groupings: int = field(default=10, metadata=_help("random groupings R to average over"))
    batch_size: int = field(default=64, metadata=_help("groups per forward pass"))
    seed: int = field(default=0, metadata=_help("grouping r is drawn with seed + r"))
    max_length: int | None = field(
        default=None, metadata=_help("tokens per row", default="the adapter's, or 128 without one")
    )
    adversarial_partners: int | None = field(
        default=None,
        metadata=_help("also: K random partner sets per row, the row in every slot", default="off"),
    )
    adversarial_rows: int = field(default=200, metadata=_help("rows for --adversarial-partners"))
    fallback_margin: list[float] | None = field(
        default=None,
        metadata=_help(
            "also: accuracy and re-run share with the fallback at margins M[,M...]", default="off"
        ),
    )
    serve_window: int | None = field(
        default=None,
        metadata=_help(
            "also: the same measures with groups drawn as the server draws them (requests in arrival "
            "windows of this many, grouped by similar length in each)",
            default="off",
        ),
    )
    quantize: str = field(
        default="none",
        metadata=_help(
            "run the frozen backbone in none, int8 (torch dynamic int8, CPU) or bf16 (the teacher and "
            "multiplexed rows alike); adapters stay fp32",
            check=check_quantize,
        ),
    )

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> ConfigError:
            return ConfigError(f"{dashed(name)} must be {want}, got {getattr(self, name)!r}.")

        for name in ("groupings", "batch_size", "adversarial_rows"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        if not _is_int(self.seed):
            raise bad("seed", "an integer")
        if self.max_length is not None and (not _is_int(self.max_length) or self.max_length < 2):
            raise bad("max_length", "an integer >= 2 or unset")
        window = self.serve_window
        if window is not None and (not _is_int(window) or window < 1):
            raise bad("serve_window", "an integer >= 1 or unset")
        partners = self.adversarial_partners
        if partners is not None and (not _is_int(partners) or partners < 1):
            raise bad("adversarial_partners", "an integer >= 1 or unset")
        margins = self.fallback_margin
        if margins is not None and (
            not isinstance(margins, list)
            or not margins
            or any(isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m <= 1 for m in margins)
        ):
            raise ConfigError(f"--fallback-margin takes probability margins in [0, 1], got {margins!r}.")
        self.quantize = check_quantize(self.quantize)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "eval config") -> EvalConfig:
        """Built by the shared loader: unknown keys refused, strings converted ("0.5,0.6" -> [0.5, 0.6])."""
        return config_from_dict(cls, data, source=source)

    @classmethod
    def resolve(
        cls, config: EvalConfig | None, knobs: Mapping[str, Any], source: str = "evaluate"
    ) -> EvalConfig:
        """`config` (default: the defaults) with `knobs` (field name -> value) over it."""
        return resolve_config(cls, config, knobs, source=source)
