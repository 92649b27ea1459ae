"""MuxModel: grouping, input order, leftovers, trainability, and adapter checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from revmux.config import CONFIG_NAME, WEIGHTS_NAME
from revmux.errors import CheckpointError
from revmux.model import MuxModel
from revmux.runs import plan_groups
from tests.tiny import tiny_batch, tiny_bert

KINDS = ["revmux", "ora", "adapter", "datamux"]


def _randomize(model: MuxModel, std: float = 0.3) -> MuxModel:
    """Non-trivial adapter weights, so that partners really influence each other."""
    with torch.no_grad():
        for p in model.mux.parameters():
            p.normal_(0.0, std)
    return model


@pytest.fixture(scope="module")
def view():
    return tiny_bert()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("B", [1, 2, 5, 8])
def test_any_batch_size_gives_one_row_per_request(view, kind, n, B):
    model = MuxModel.from_backbone(view, kind=kind, n=n, k=1)
    with torch.inference_mode():
        logits = model(tiny_batch([3 + (i * 5) % 9 for i in range(B)]))
    assert logits.shape == (B, view.num_labels)
    assert torch.isfinite(logits).all()


def test_n1_is_plain_inference(view):
    batch = tiny_batch([4, 9, 6])
    model = MuxModel.from_backbone(view, kind="revmux", n=1, k=2)
    assert model.num_trainable() == 0
    with torch.inference_mode():
        torch.testing.assert_close(model(batch), view.forward_unsplit(batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_leftovers_run_unmultiplexed_not_padded(view, kind):
    """B mod N requests run at N = 1: their logits equal the plain model's exactly."""
    batch = tiny_batch([5, 7, 3, 9, 4])  # N = 2: two groups + one leftover (the last)
    model = _randomize(MuxModel.from_backbone(view, kind=kind, n=2, k=1))
    with torch.inference_mode():
        out = model(batch)
        plain = view.forward_unsplit(batch)
    torch.testing.assert_close(out[4], plain[4], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[:4], plain[:4], atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_logits_follow_their_requests_and_groups_are_independent(view, kind):
    batch = tiny_batch([5, 7, 3, 9, 4, 8], seed=1)
    model = _randomize(MuxModel.from_backbone(view, kind=kind, n=2, k=1))
    with torch.inference_mode():
        out = model(batch)
        # swap the first two groups ({0,1} and {2,3}) in the input: each request keeps its answer
        perm = torch.tensor([2, 3, 0, 1, 4, 5])
        swapped = model({k: v[perm] for k, v in batch.items()})
        torch.testing.assert_close(swapped, out[perm], atol=1e-5, rtol=1e-5)
        # replace request 5 (group {4,5}): requests 0..3 are unaffected, request 4 is affected
        other = tiny_batch([5, 7, 3, 9, 4, 8], seed=2)
        changed = {k: torch.cat([v[:5], other[k][5:]]) for k, v in batch.items()}
        out2 = model(changed)
    torch.testing.assert_close(out2[:4], out[:4], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out2[4], out[4], atol=1e-4)


def test_forward_matches_the_method_step_by_step(view):
    """prefill -> mux -> tail with OR-mask -> demux at read positions -> head, written out by hand."""
    batch = tiny_batch([3, 10, 6, 6])
    model = _randomize(MuxModel.from_backbone(view, kind="revmux", n=2, k=1))
    with torch.inference_mode():
        state = view.run_layers(view.embed(batch), 0, 1)
        h = state.hidden.view(2, 2, *state.hidden.shape[1:])
        masks = state.attention_mask.view(2, 2, -1)
        comp_mask = masks.max(dim=1).values
        comp = view.composite_state(model.mux.mux(h), comp_mask)
        out = view.run_layers(comp, 1, view.num_layers).hidden
        rows = out[:, 0].unsqueeze(1).expand(2, 2, -1)  # BERT reads CLS
        expected = view.head(model.mux.demux(rows).flatten(0, 1), state.attention_mask)
        torch.testing.assert_close(model(batch), expected, atol=1e-5, rtol=1e-5)


def test_order_and_length_aware_grouping():
    lengths = torch.tensor([3, 12, 4, 11, 5, 10])
    assert plan_groups(lengths, 2).tolist() == [0, 1, 2, 3, 4, 5]
    sorted_perm = plan_groups(lengths, 2, length_aware=True)
    assert lengths[sorted_perm].tolist() == [12, 11, 10, 5, 4, 3]
    order = torch.tensor([5, 4, 3, 2, 1, 0])
    assert plan_groups(lengths, 2, order=order).tolist() == order.tolist()


def test_length_aware_grouping_keeps_answers_in_input_order(view):
    batch = tiny_batch([3, 12, 4, 11, 5, 10])
    model = _randomize(MuxModel.from_backbone(view, kind="revmux", n=2, k=1))
    with torch.inference_mode():
        out = model(batch, length_aware=True)
        perm = plan_groups(batch["attention_mask"].sum(1), 2, length_aware=True)
        direct = model({k: v[perm] for k, v in batch.items()})
    torch.testing.assert_close(out[perm], direct, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_only_adapters_train(view, kind):
    model = MuxModel.from_backbone(view, kind=kind, n=2, k=1)
    assert all(not p.requires_grad for p in view.model.parameters())
    assert model.num_trainable() == sum(p.numel() for p in model.mux.parameters() if p.requires_grad) > 0
    model.train()
    assert not view.model.training, "putting the MuxModel in train mode must not wake the backbone's dropout"
    loss = model(tiny_batch([4, 6, 5, 7])).logsumexp(-1).sum()
    loss.backward()
    for name, p in model.mux.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
    assert set(model.state_dict()) == {f"mux.{k}" for k in model.mux.state_dict()}


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_identical_logits(view, kind, tmp_path):
    batch = tiny_batch([5, 7, 3, 9, 4])
    model = _randomize(MuxModel.from_backbone(view, kind=kind, n=2, k=1, task="toy"))
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["kind"] == kind and config["n"] == 2 and config["k"] == 1
    assert config["backbone_model_type"] == "bert" and len(config["backbone_hash"]) == 64
    loaded = MuxModel.from_pretrained(tmp_path, view)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(batch), model(batch), atol=0, rtol=0)


@pytest.mark.parametrize("natural_scale", [False, True])
def test_pca_composite_saves_and_reloads_to_identical_logits(view, tmp_path, natural_scale):
    batch = tiny_batch([5, 7, 3, 9, 4])
    options = {"natural_scale": natural_scale}  # the PCA composite is the default
    model = MuxModel.from_backbone(view, kind="revmux", n=2, k=1, options=options)
    with torch.no_grad():
        model.mux.init_down_pca(model.prefill(tiny_batch([9] * 12)).hidden.reshape(-1, view.hidden_size))
    _randomize(model)  # parameters only: the basis and mean are buffers and keep their PCA values
    assert not torch.equal(model.mux.composite_basis, torch.eye(view.hidden_size))
    model.save_pretrained(tmp_path)
    loaded = MuxModel.from_pretrained(tmp_path, view)
    assert loaded.config.options["pca_composite"]
    torch.testing.assert_close(loaded.mux.composite_mean, model.mux.composite_mean, atol=0, rtol=0)
    assert loaded.config.options["natural_scale"] is natural_scale
    if natural_scale:  # slot 1 sits in minor directions: scaled down at init, restored as saved
        assert (model.mux.composite_scale[model.mux.d_sub :] < 1).all()
        torch.testing.assert_close(loaded.mux.composite_scale, model.mux.composite_scale, atol=0, rtol=0)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(batch), model(batch), atol=0, rtol=0)


@pytest.mark.parametrize("pack", [False, True])
@pytest.mark.parametrize("length_aware", [True, False])
@pytest.mark.parametrize(
    ("n", "batch_size", "runs", "packed_runs"),
    [(2, 64, 4, 4), (2, 40, 2, 4), (4, 32, 2, 4), (4, 35, 2, 4), (4, 12, 1, 1)],
)
def test_tail_runs_cut_at_their_own_length_equal_one_padded_run(
    view, length_aware, n, batch_size, runs, packed_runs, pack
):
    """Bucketed prefill and tail (runs cut after their last real column) == one run over the padded batch;
    with the packed tail the prefill runs in its own cut (runs of 8, at most 4) and the tail once over all runs."""
    lengths = [3 + (i * 7) % 29 for i in range(batch_size)]
    batch = tiny_batch(lengths, seed=3)
    model = _randomize(MuxModel.from_backbone(view, kind="revmux", n=n, k=1))
    model.pack_tail = pack
    if pack:
        runs = packed_runs  # runs of at least 8 requests, at most 4 runs (PREFILL_MAX_RUNS)
    calls: list[int] = []
    hooks = [
        model.view.layer_modules()[i].register_forward_pre_hook(lambda *_, i=i: calls.append(i))
        for i in (0, 1)
    ]
    try:
        with torch.inference_mode():
            bucketed = model(batch, length_aware=length_aware)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls.count(0) == runs  # the prefill (layer 0 at k = 1) runs once per run, leftovers included
    tail_passes = 1 if pack else runs  # the tail once per run, or once over all runs packed
    assert calls.count(1) == tail_passes + (batch_size % n > 0)  # + the N = 1 leftovers
    with torch.inference_mode():
        model.max_runs = 1
        single = model(batch, length_aware=length_aware)
    torch.testing.assert_close(bucketed, single, atol=1e-5, rtol=1e-5)


def test_bucketed_runs_on_a_causal_decoder():
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    from revmux.backbones import view_for

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=120,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
        num_labels=2,
    )
    dec = view_for(AutoModelForSequenceClassification.from_config(config).eval())
    batch = {
        k: v
        for k, v in tiny_batch([3 + (i * 5) % 17 for i in range(36)], seed=4).items()
        if k != "token_type_ids"
    }
    left = {key: value.flip(1) for key, value in batch.items()}  # the same requests, left-padded
    model = _randomize(MuxModel.from_backbone(dec, kind="revmux", n=2, k=1))
    with torch.inference_mode():
        bucketed = model(batch, length_aware=True)
        bucketed_left = model(left, length_aware=True)
        model.max_runs = 1
        single = model(batch, length_aware=True)
        single_left = model(left, length_aware=True)
    torch.testing.assert_close(bucketed, single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bucketed_left, single_left, atol=1e-5, rtol=1e-5)


def test_adapter_saved_before_options_existed_loads_as_trained(view, tmp_path):
    """mux_config.json of older adapters had flat f_hidden/up_hidden/pca_composite/up_norm keys and no
    `options`: they load with what they were trained with (no PCA composite), not with today's defaults."""
    batch = tiny_batch([5, 7, 3, 9])
    model = _randomize(MuxModel.from_backbone(view, n=2, k=1, options={"pca_composite": False}))
    model.save_pretrained(tmp_path)
    path = tmp_path / CONFIG_NAME
    data = json.loads(path.read_text())
    del data["options"]
    data |= {"f_hidden": None, "up_hidden": None, "up_norm": False, "pca_composite": False}
    path.write_text(json.dumps(data))
    loaded = MuxModel.from_pretrained(tmp_path, view)
    assert loaded.config.options == {"pca_composite": False} and not loaded.mux.pca_composite
    with torch.inference_mode():
        torch.testing.assert_close(loaded(batch), model(batch), atol=0, rtol=0)
    path.write_text(json.dumps(data | {"up_norm": True}))
    with pytest.raises(CheckpointError, match="up_norm.*Re-train"):
        MuxModel.from_pretrained(tmp_path, view)
