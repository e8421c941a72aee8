"""attn_implementation="causal_blocks": the same attention as eager, computed block by block without the keys a
causal mask hides and without copying grouped key/value heads."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn
from transformers import AttentionInterface, AutoModelForCausalLM

from allmrec_hf import causal_blocks_attention
from allmrec_hf.causal_blocks_attention import CAUSAL_BLOCKS, causal_blocks_attention_forward
from conftest import LM_FAMILIES, build_model
from test_modeling_allmrec import CANDIDATES, HISTORIES, TARGETS, model_inputs


class CausalModule(nn.Module):
    is_causal = True


def record_matmul_operands(monkeypatch) -> list[tuple]:
    """From now on, the shape of the second operand of every `torch.matmul` call, in order."""
    seen = []
    original = torch.matmul

    def recording_matmul(a, b, **kwargs):
        seen.append(tuple(b.shape))
        return original(a, b, **kwargs)

    monkeypatch.setattr(torch, "matmul", recording_matmul)
    return seen


def eager_reference(query, key, value, mask, scaling):
    """transformers' eager attention, written out: repeated key/value heads, full scores, additive mask."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = query @ key.transpose(2, 3) * scaling
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return (weights @ value).transpose(1, 2)


def causal_mask(batch, q_len, kv_len, padding=(0,), heads=1, dtype=torch.float32, boolean=False):
    """Queries at the last q_len key positions; row r left-padded by padding[r] keys. Returns the mask and which
    query rows see at least one key (fully hidden rows are padding, whose output no one reads)."""
    positions = torch.arange(kv_len - q_len, kv_len)[:, None]
    visible = (torch.arange(kv_len)[None, :] <= positions)[None].repeat(batch, 1, 1)
    for row, pad in enumerate(padding):
        visible[row, :, :pad] = False
    visible = visible[:, None].expand(batch, heads, q_len, kv_len)
    live = visible.any(-1)  # (batch, heads, q)
    if boolean:
        return visible, live
    return torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min), live


@pytest.mark.parametrize(
    "q_len, kv_len, heads, kv_heads",
    [(300, 300, 6, 2), (300, 300, 4, 4), (1, 301, 6, 3), (140, 400, 6, 2), (5, 5, 2, 1), (520, 520, 4, 2)],
)
def test_matches_eager_attention_forward_and_backward(q_len, kv_len, heads, kv_heads):
    torch.manual_seed(0)
    query = torch.randn(2, heads, q_len, 8, requires_grad=True)
    key = torch.randn(2, kv_heads, kv_len, 8, requires_grad=True)
    value = torch.randn(2, kv_heads, kv_len, 8, requires_grad=True)
    mask, live = causal_mask(2, q_len, kv_len, padding=(0, 7))
    out, weights = causal_blocks_attention_forward(CausalModule(), query, key, value, mask, scaling=0.3)
    expected = eager_reference(query, key, value, mask, 0.3)
    rows = live[:, 0]  # (batch, q): compare the rows that see a key
    assert weights is None and out.shape == (2, q_len, heads, 8)
    torch.testing.assert_close(out[rows], expected[rows], rtol=1e-5, atol=1e-5)
    grad_out = torch.randn_like(out) * rows[:, :, None, None]
    grads = torch.autograd.grad(out, (query, key, value), grad_out)
    expected_grads = torch.autograd.grad(expected, (query, key, value), grad_out)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_splits_long_queries_into_blocks_and_skips_hidden_keys(monkeypatch):
    """With 300 queries and blocks of 64, the products stop at each block's last key."""
    monkeypatch.setattr(causal_blocks_attention, "BLOCK_SIZE", 64)
    seen = record_matmul_operands(monkeypatch)
    q = torch.randn(1, 4, 300, 8)
    kv = torch.randn(1, 2, 300, 8)
    causal_blocks_attention_forward(CausalModule(), q, kv, kv, None, scaling=1.0)
    key_lengths = [shape[-1] for shape in seen[0::2]]
    assert key_lengths == [75, 150, 225, 300]  # 4 blocks (MAX_BLOCKS) of 75 queries each


@pytest.mark.parametrize(
    "variant", ["none", "boolean", "per_head", "per_head_broadcast", "bfloat16", "float32_mask_bfloat16_attention"]
)
def test_mask_forms(variant):
    """The mask forms transformers passes. A float32 mask with bfloat16 queries is what bf16 autocast over a
    float32 LM gives: its minimum would round to -inf in bfloat16 and turn fully hidden padding rows into NaN."""
    torch.manual_seed(0)
    dtype = torch.bfloat16 if "bfloat16" in variant else torch.float32
    query = torch.randn(2, 6, 260, 8, dtype=dtype)
    key, value = torch.randn(2, 3, 260, 8, dtype=dtype), torch.randn(2, 3, 260, 8, dtype=dtype)
    padding = (0,) if variant == "none" else (0, 5)
    reference_mask, live = causal_mask(2, 260, 260, padding=padding, dtype=dtype)
    if variant == "none":
        mask = None
    elif variant == "boolean":
        mask, _ = causal_mask(2, 260, 260, padding=padding, boolean=True)
    elif variant == "per_head":
        mask, _ = causal_mask(2, 260, 260, padding=padding, heads=6)
    elif variant == "per_head_broadcast":  # one mask for the whole batch
        reference_mask, live = causal_mask(1, 260, 260, heads=6)
        mask = reference_mask
    elif variant == "float32_mask_bfloat16_attention":
        mask, _ = causal_mask(2, 260, 260, padding=padding)
    else:
        mask = reference_mask
    out, _ = causal_blocks_attention_forward(CausalModule(), query, key, value, mask, scaling=0.35)
    expected = eager_reference(query, key, value, reference_mask, 0.35)
    assert not out.isnan().any()
    rows = live[:, 0].expand(2, -1)
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(out[rows], expected[rows], rtol=tolerance, atol=tolerance)


def test_refuses_what_it_does_not_compute():
    q, kv = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="soft-capping"):
        causal_blocks_attention_forward(CausalModule(), q, kv, kv, None, scaling=1.0, softcap=50.0)
    with pytest.raises(ValueError, match="sinks"):
        causal_blocks_attention_forward(CausalModule(), q, kv, kv, None, scaling=1.0, s_aux=torch.zeros(2))
    bidirectional = CausalModule()
    bidirectional.is_causal = False
    with pytest.raises(ValueError, match="needs causal attention"):
        causal_blocks_attention_forward(bidirectional, q, kv, kv, None, scaling=1.0)
    with pytest.raises(ValueError, match="3 query heads"):
        causal_blocks_attention_forward(CausalModule(), torch.randn(1, 3, 4, 8), kv, kv, None, scaling=1.0)


def with_attention(model, implementation):
    model.language_model.config._attn_implementation = implementation
    return model


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_recommender_trains_ranks_and_generates_as_with_eager(family, processor, monkeypatch):
    """Every LM family in the tests: the stage-2 loss and the projectors' gradients, the token-tree candidate
    scores (a custom 4D mask over a cached prompt) and greedy generation (one query against the cache) equal
    eager attention's. Blocks of 8 queries, so the tiny prompts span several blocks."""
    monkeypatch.setattr(causal_blocks_attention, "BLOCK_SIZE", 8)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES, targets=TARGETS)
    results = {}
    for implementation in ("eager", CAUSAL_BLOCKS):
        model = with_attention(build_model(family, processor), implementation).train()
        for module in model.modules():  # dropout off: the two runs must see the same network
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        loss = model(**model_inputs(batch)).loss
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
        model.eval()
        inference = processor(histories=HISTORIES, candidates=CANDIDATES)
        with torch.no_grad():
            scores = model.score_candidates(**inference)
        keys = ("input_ids", "attention_mask", "cf_input_ids", "item_ids")
        generated = model.generate(**{k: inference[k] for k in keys}, max_new_tokens=4, do_sample=False)
        results[implementation] = loss.detach(), grads, scores, generated
        assert model.supports_candidate_packing(10)  # (gemma3 has a 16-token window)
    (loss, grads, scores, generated), (b_loss, b_grads, b_scores, b_generated) = results.values()
    torch.testing.assert_close(b_loss, loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == b_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(b_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(b_scores, scores, rtol=1e-5, atol=1e-5)
    assert torch.equal(b_generated, generated)


def test_from_pretrained_takes_it_by_name(processor, tmp_path):
    """The name the scripts' --attn_implementation passes on to the LM's from_pretrained."""
    build_model("llama", processor).language_model.save_pretrained(tmp_path / "lm")
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm", attn_implementation=CAUSAL_BLOCKS).eval()
    eager = AutoModelForCausalLM.from_pretrained(tmp_path / "lm", attn_implementation="eager").eval()
    assert lm.config._attn_implementation == CAUSAL_BLOCKS
    ids = torch.randint(4, 60, (2, 40))
    mask = torch.ones_like(ids)
    mask[0, :6] = 0
    with torch.no_grad():
        torch.testing.assert_close(
            lm(input_ids=ids, attention_mask=mask).logits[1], eager(input_ids=ids, attention_mask=mask).logits[1]
        )


def compiled_attention_run(model, ids, implementation):
    """Logits and the gradient of a loss on them with respect to the input embeddings."""
    model.config._attn_implementation = implementation
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    logits = model(inputs_embeds=embeds).logits
    (grad,) = torch.autograd.grad(logits.square().mean(), embeds)
    return logits.detach(), grad


def test_torch_compile_calls_the_blocks_as_one_operator(processor, monkeypatch):
    """torch.compile (full graph, dynamic prompt lengths, through AOT autograd) keeps the operator whole: the
    blocks run inside it, each against its own keys and the shared key/value heads, and the logits and gradients
    equal eager attention's."""
    monkeypatch.setattr(causal_blocks_attention, "BLOCK_SIZE", 8)
    lm = build_model("llama", processor).language_model
    compiled = torch.compile(lm, backend="aot_eager", fullgraph=True, dynamic=True)
    try:
        for length in (40, 33):
            ids = torch.randint(4, 60, (2, length))
            expected = compiled_attention_run(lm, ids, "eager")
            seen = record_matmul_operands(monkeypatch)
            got = compiled_attention_run(compiled, ids, CAUSAL_BLOCKS)
            monkeypatch.undo()
            monkeypatch.setattr(causal_blocks_attention, "BLOCK_SIZE", 8)
            block = length // 4
            first_layer = [shape[-1] for shape in seen[0:8:2]]
            assert first_layer == [block, 2 * block, 3 * block, length]  # 4 blocks (MAX_BLOCKS), own keys each
            assert all(shape[1] == 2 for shape in seen)  # the 2 key/value heads, not 4 repeated copies
            for value, want in zip(got, expected, strict=True):
                torch.testing.assert_close(value, want, rtol=1e-4, atol=1e-5)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("keep_weights", [True, False])
def test_operator_passes_opcheck(keep_weights):
    """torch.library's checks of the custom operator: schema, fake (meta) implementation, autograd registration
    and AOT dispatch with dynamic shapes."""
    torch.manual_seed(0)
    q = torch.randn(2, 4, 20, 8, requires_grad=keep_weights)
    k, v = (torch.randn(2, 2, 20, 8, requires_grad=keep_weights) for _ in range(2))
    mask, _ = causal_mask(2, 20, 20, padding=(0, 3))
    torch.library.opcheck(causal_blocks_attention._OP, (q, k, v, mask[:, :, None], 0.3, keep_weights))
    torch.library.opcheck(causal_blocks_attention._OP, (q, k, v, None, 0.3, keep_weights))


def test_backward_without_kept_weights_says_so():
    q = torch.randn(1, 2, 6, 8, requires_grad=True)
    kv = torch.randn(1, 2, 6, 8)
    out, _ = causal_blocks_attention._OP(q, kv, kv, None, 1.0, False)
    with pytest.raises(RuntimeError, match="without keeping its weights"):
        out.sum().backward()


def test_backward_fills_no_gradient_for_the_weights_buffer():
    """The kept weights are for the backward only: the buffer takes no gradient, so autograd does not fill a zero
    tensor of its size (batch * heads * q_len * kv_len) on every backward pass, as it did (~7% of the operator's
    time in eager training)."""
    q = torch.randn(2, 4, 40, 8, requires_grad=True)
    k, v = (torch.randn(2, 2, 40, 8, requires_grad=True) for _ in range(2))
    out, store = causal_blocks_attention._OP(q, k, v, None, 0.3, True)
    assert out.requires_grad and not store.requires_grad
    with torch.profiler.profile(record_shapes=True) as profile:
        out.sum().backward()
    filled = [event.input_shapes[0] for event in profile.events() if event.name in ("aten::fill_", "aten::zero_")]
    assert [store.numel()] not in filled, filled
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, k, v))


def test_bfloat16_gradients_are_as_accurate_as_eager():
    """In bfloat16 the operator keeps bf16 weights and takes the softmax's backward from them (eager keeps float32
    ones); against a float32 computation from the same inputs its gradients are within 1.5x of eager's error."""
    torch.manual_seed(0)
    inputs = [torch.randn(2, h, 300, 16) for h in (6, 2, 2)]
    visible, live = causal_mask(2, 300, 300, padding=(0, 9), boolean=True)
    grad_out = torch.randn(2, 300, 6, 16) * live[:, 0, :, None, None]

    def gradients(dtype, attention):
        leaves = [t.to(dtype).requires_grad_() for t in inputs]
        mask = torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)
        out = attention(*leaves, mask)
        return torch.autograd.grad(out, leaves, grad_out.to(dtype))

    def ours(q, k, v, m):
        return causal_blocks_attention_forward(CausalModule(), q, k, v, m, scaling=0.25)[0]

    def eager(q, k, v, m):
        return eager_reference(q, k, v, m, 0.25)

    exact = gradients(torch.float32, eager)
    for got, want, eager_bf16 in zip(
        gradients(torch.bfloat16, ours), exact, gradients(torch.bfloat16, eager), strict=True
    ):
        error = (got.float() - want).norm() / want.norm()
        eager_error = (eager_bf16.float() - want).norm() / want.norm()
        assert error < 1.5 * eager_error + 1e-3, (error, eager_error)


def test_attention_dropout_in_training():
    """An LM with attention dropout, in training: the weights are dropped (the output changes), gradients flow,
    and in eval mode the same call is the plain attention."""
    torch.manual_seed(0)
    q = torch.randn(1, 4, 150, 8, requires_grad=True)
    kv = torch.randn(1, 2, 150, 8)
    module = CausalModule().train()
    plain, _ = causal_blocks_attention_forward(module, q, kv, kv, None, scaling=0.3)
    dropped, _ = causal_blocks_attention_forward(module, q, kv, kv, None, scaling=0.3, dropout=0.5)
    assert not torch.allclose(dropped, plain)
    dropped.sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    evaluated, _ = causal_blocks_attention_forward(module.eval(), q, kv, kv, None, scaling=0.3, dropout=0.5)
    torch.testing.assert_close(evaluated, plain)


def load_copy(path, name="checkpoint_copy.causal_blocks_attention"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_operator_name_changes_with_the_implementation(tmp_path):
    """Inductor's on-disk caches key compiled graphs by operator name: a changed implementation gets a new name,
    so it never runs graphs compiled for the old one."""
    source = open(causal_blocks_attention.__file__).read()
    names = []
    try:
        for index, text in enumerate((source, source, source + "\n# changed\n")):
            path = tmp_path / f"copy{index}" / "causal_blocks_attention.py"
            path.parent.mkdir()
            path.write_text(text)
            names.append(load_copy(path)._OP_NAME)
    finally:
        AttentionInterface.register(CAUSAL_BLOCKS, causal_blocks_attention.causal_blocks_attention_forward)
    assert names[0] == names[1] != names[2]
    assert names[0].startswith("checkpoint_copy_causal_blocks_attention_")


def test_a_second_copy_of_the_module_registers_its_own_operator():
    """trust_remote_code loads the shipped modules under another package name in the same process as an
    installed allmrec_hf: each copy gets its own operator instead of failing to register the same name, and
    re-importing a module reuses its operator."""
    spec = importlib.util.spec_from_file_location(
        "checkpoint_copy.causal_blocks_attention", causal_blocks_attention.__file__
    )
    copy = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(copy)
        assert copy._OP_NAME != causal_blocks_attention._OP_NAME
        q, kv = torch.randn(1, 4, 20, 8), torch.randn(1, 2, 20, 8)
        torch.testing.assert_close(
            copy.causal_blocks_attention_forward(CausalModule(), q, kv, kv, None)[0],
            causal_blocks_attention_forward(CausalModule(), q, kv, kv, None)[0],
        )
        registered = causal_blocks_attention._OP
        assert importlib.reload(causal_blocks_attention)._OP is registered
    finally:  # the copy and the reload registered their own forward functions under the name
        AttentionInterface.register(CAUSAL_BLOCKS, causal_blocks_attention.causal_blocks_attention_forward)
