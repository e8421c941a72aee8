"""A-LLMRec model behaviour on tiny random LMs of several families."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM

from allmrec_hf import ALLMRecAlignerConfig, ALLMRecConfig, ALLMRecForConditionalGeneration, SASRecConfig
from allmrec_hf.candidate_tree import build_candidate_token_tree
from conftest import LM_FAMILIES, build_model, lm_config

HISTORIES = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]]
CANDIDATES = [[4, 5, 6, 20], [16, 17, 18, 21]]
TARGETS = [5, 17]
MODEL_KEYS = ("input_ids", "attention_mask", "cf_input_ids", "item_ids", "labels")


def model_inputs(batch):
    return {key: batch[key] for key in MODEL_KEYS if key in batch}


def naive_candidate_scores(model, processor, history, candidates) -> torch.Tensor:
    """Log-likelihood of each candidate's answer from one full, unpadded forward per candidate."""
    scores = []
    for candidate in candidates:
        batch = processor(histories=[history], candidates=[candidates], targets=[candidate])
        logits = model(**model_inputs({k: v for k, v in batch.items() if k != "labels"})).logits
        log_probs = torch.log_softmax(logits[0, :-1].float(), dim=-1)
        labels = batch["labels"][0, 1:]
        positions = (labels != -100).nonzero()[:, 0]
        scores.append(log_probs[positions, labels[positions]].sum())
    return torch.stack(scores)


def plant(model, processor, history, candidates, target, steps=60, lr=3e-2, train_lm=False):
    """Train the projectors (and the tiny LM with `train_lm`) on one example; returns the loss history.
    A random 2-layer LM cannot be steered into a 15-token title through its inputs alone, so planting an
    answer trains the LM too; the frozen-LM contract is tested separately."""
    batch = processor(histories=[history], candidates=[candidates], targets=[target])
    if train_lm:
        model.language_model.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**model_inputs(batch)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    model.language_model.requires_grad_(False)
    return losses


def test_input_ids_path_equals_language_model_without_placeholders(family, processor):
    model = build_model(family, processor)
    ids = processor.tokenizer("Recommend one next movie for this user", return_tensors="pt")["input_ids"]
    mask = torch.ones_like(ids)
    ours = model(input_ids=ids, attention_mask=mask).logits
    theirs = model.language_model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_injected_positions_carry_projected_embeddings(family, processor):
    model = build_model(family, processor)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    embeds, user_features, item_features = model.get_inputs_embeds(
        batch["input_ids"], batch["cf_input_ids"], batch["item_ids"]
    )
    scale = getattr(model.get_input_embeddings(), "embed_scale", 1.0)
    if family == "gemma3":
        assert float(scale) == pytest.approx(32**0.5)  # Gemma scales token embeddings; injected ones must match
    user_mask, item_mask = model.get_placeholder_masks(batch["input_ids"])
    torch.testing.assert_close(embeds[user_mask], model.get_user_features(batch["cf_input_ids"]) * scale)
    expected_items = model.get_item_features(batch["item_ids"][batch["item_ids"] != 0]) * scale
    torch.testing.assert_close(embeds[item_mask], expected_items)
    assert user_features.shape == (2, model.config.text_config.hidden_size)
    assert item_features.shape[0] == int(item_mask.sum())
    # Every other position holds the LM's own token embedding.
    plain = model.get_input_embeddings()(batch["input_ids"].masked_fill(user_mask | item_mask, 0))
    other = ~(user_mask | item_mask)
    torch.testing.assert_close(embeds[other], plain[other])


def test_loss_is_cross_entropy_on_answer_tokens_only(family, processor):
    model = build_model(family, processor)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES, targets=TARGETS)
    loss = model(**model_inputs(batch)).loss
    full = model(**model_inputs({k: v for k, v in batch.items() if k != "labels"})).logits
    labels = batch["labels"]
    log_probs = torch.log_softmax(full[:, :-1].float(), dim=-1)
    next_labels = labels[:, 1:]
    target = next_labels != -100
    expected = -log_probs[target].gather(1, next_labels[target][:, None]).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    answer_tokens = sum(len(processor.answer_ids(t)) for t in TARGETS)
    assert int(target.sum()) == answer_tokens


def test_left_and_right_padding_give_the_same_loss(family, processor):
    model = build_model(family, processor)
    left = processor(histories=HISTORIES, candidates=CANDIDATES, targets=TARGETS, padding_side="left")
    right = processor(histories=HISTORIES, candidates=CANDIDATES, targets=TARGETS, padding_side="right")
    torch.testing.assert_close(model(**model_inputs(left)).loss, model(**model_inputs(right)).loss)


def test_gradients_reach_the_projectors_and_nothing_else(family, processor):
    model = build_model(family, processor)
    model.train()
    assert not model.language_model.training and not model.recommender.training  # frozen parts stay in eval
    batch = processor(histories=HISTORIES, candidates=CANDIDATES, targets=TARGETS)
    model(**model_inputs(batch)).loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad, "no parameter received a gradient"
    assert all(name.startswith(("user_projector.", "item_projector.")) for name in with_grad), with_grad
    for prefix in ("user_projector.", "item_projector."):
        grads = [p.grad.abs().sum() for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(float(g) > 0 for g in grads), prefix
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(name.startswith(("user_projector.", "item_projector.")) for name in trainable)
    assert "trainable params" in model.print_trainable_parameters()


@pytest.mark.parametrize("candidate_packing", [None, False])
@pytest.mark.parametrize("candidate_batch_size", [None, 3])
def test_score_candidates_equals_naive_full_forward(family, processor, candidate_batch_size, candidate_packing):
    model = build_model(family, processor)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    scores = model.score_candidates(
        **batch, candidate_batch_size=candidate_batch_size, candidate_packing=candidate_packing
    )
    assert scores.shape == (2, 4)
    for row, (history, candidates) in enumerate(zip(HISTORIES, CANDIDATES, strict=True)):
        expected = naive_candidate_scores(model, processor, history, candidates)
        torch.testing.assert_close(scores[row], expected, rtol=1e-4, atol=1e-4)
    mean = model.score_candidates(**batch, reduction="mean")
    lengths = batch["candidate_attention_mask"].sum(-1)
    torch.testing.assert_close(mean, scores / lengths, rtol=1e-5, atol=1e-5)


def test_candidate_packing_is_the_default_where_the_lm_takes_4d_masks(family, processor):
    model = build_model(family, processor)
    # the tiny gemma3 has a 16-token sliding window, shorter than any prompt: it falls back to padded rows
    assert model.supports_candidate_packing(100) == (family != "gemma3")
    model.language_model.config._attn_implementation = "flash_attention_2"
    assert not model.supports_candidate_packing(100)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_packed_scores_with_shared_answer_prefixes_equal_padded_ones(family, processor):
    """Candidates whose titles share their first tokens, and a padded candidate slot; gemma3 with a sliding window
    longer than prompt and answers packs too."""
    model = build_model(family, processor)
    if family == "gemma3":
        model.language_model.config.sliding_window = 4096
    titles = {i: processor.catalog.title(i) for i in range(1, 25)}
    same_start = [i for i in titles if titles[i].split()[0] == titles[1].split()[0]]
    assert len(same_start) >= 2
    candidates = [[1, *same_start[1:3], 7, 30], [2, 9, 11]]
    batch = processor(histories=HISTORIES, candidates=candidates)
    assert model.supports_candidate_packing(batch["input_ids"].shape[1] + batch["candidate_input_ids"].shape[2])
    packed = model.score_candidates(**batch, candidate_packing=True)
    padded = model.score_candidates(**batch, candidate_packing=False)
    torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-4)
    assert packed[1, 3] == float("-inf") and torch.isfinite(packed[0]).all()
    chunked = model.score_candidates(**batch, candidate_packing=True, candidate_batch_size=2)
    torch.testing.assert_close(chunked, padded, rtol=1e-4, atol=1e-4)
    bf16 = build_model(family, processor).to(torch.bfloat16)
    if family == "gemma3":
        bf16.language_model.config.sliding_window = 4096
    torch.testing.assert_close(
        bf16.score_candidates(**batch, candidate_packing=True),
        bf16.score_candidates(**batch, candidate_packing=False),
        rtol=0.02,
        atol=0.3,
    )


def test_packed_scoring_runs_the_lm_head_only_on_real_tree_nodes(family, processor):
    """The tree pass asks the LM head for the logits of the nodes that predict an answer token, each once, not for
    the padding nodes of the smaller trees; the scores equal those from every node's logits (an LM whose head
    cannot be asked), and the LM's next plain forward computes every position again."""
    model = build_model(family, processor)
    if family == "gemma3":
        model.language_model.config.sliding_window = 4096
    titles = {i: processor.catalog.title(i) for i in range(1, 25)}
    same_start = [i for i in titles if titles[i].split()[0] == titles[1].split()[0]]
    batch = processor(histories=HISTORIES, candidates=[[1, *same_start[1:3], 7, 30], [2, 9, 11]])
    tree = build_candidate_token_tree(batch["candidate_input_ids"], batch["candidate_attention_mask"])
    predicting = {
        (b, int(tree.step_nodes[b, c, t])) for b, c, t in batch["candidate_attention_mask"][:, :, 1:].nonzero().tolist()
    }
    assert len(predicting) == tree.node_mask.sum() < tree.node_mask.numel()  # the second tree is padded
    head = model.get_output_embeddings()
    shapes = []
    handle = head.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape[:2])))
    try:
        selected = model.score_candidates(**batch, candidate_packing=True)
    finally:
        handle.remove()
    assert shapes == [(2, 1), (1, len(predicting))]  # the prompt's last position, then the predicting nodes
    head._allmrec_contiguous_input = False  # as for a head the model never hooked: it computes every node
    try:
        every_node = model.score_candidates(**batch, candidate_packing=True)
    finally:
        head._allmrec_contiguous_input = True
    torch.testing.assert_close(selected, every_node, rtol=1e-5, atol=1e-5)
    ids = torch.randint(0, 50, (2, 7))
    assert model.language_model(input_ids=ids).logits.shape[:2] == ids.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_elements", [None, 1, 70])
def test_log_normalizers_equal_logsumexp_without_touching_the_logits(dtype, chunk_elements):
    from allmrec_hf.modeling_allmrec import log_normalizers

    torch.manual_seed(0)
    logits = (torch.randn(3, 4, 50) * 8).to(dtype)
    logits[0, 1] = float("-inf")  # a row with no finite logit
    logits[1, 2, :10] = float("-inf")
    before = logits.clone()
    got = log_normalizers(logits, chunk_elements)
    assert got.dtype == torch.float32 and got.shape == (3, 4)
    torch.testing.assert_close(got, torch.logsumexp(logits.float(), -1), rtol=1e-6, atol=1e-5)
    assert torch.equal(logits, before)


def test_candidate_packing_where_the_lm_cannot_is_refused(processor):
    model = build_model("gemma3", processor)  # sliding window of 16 tokens
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    with pytest.raises(ValueError, match="sliding window under"):
        model.score_candidates(**batch, candidate_packing=True)


def test_candidate_token_tree_shares_prefixes_and_sees_ancestors_only():
    tokens = torch.tensor([[[5, 6, 7, 9], [5, 6, 8, 0], [4, 0, 0, 0], [0, 0, 0, 0]], [[3, 3, 3, 3], [0, 0, 0, 0]] * 2])
    mask = (tokens != 0).long()
    tree = build_candidate_token_tree(tokens, mask)
    # user 0: nodes 5, 6, 7 (answer 0's first three tokens); answer 1 shares 5, 6; answer 2 feeds nothing
    assert tree.input_ids[0].tolist() == [5, 6, 7] and tree.depth[0].tolist() == [0, 1, 2]
    assert tree.step_nodes[0, 0].tolist() == [0, 1, 2] and tree.step_nodes[0, 1].tolist()[:2] == [0, 1]
    assert tree.visible[0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    # user 1: answers 0 and 2 are identical and share every node; node count padded to user 0's
    assert tree.input_ids[1].tolist() == [3, 3, 3] and tree.node_mask[1].tolist() == [True, True, True]
    assert tree.step_nodes[1, 0].tolist() == tree.step_nodes[1, 2].tolist() == [0, 1, 2]
    ragged = torch.tensor([[[5, 6, 7]], [[4, 0, 0]]])
    small = build_candidate_token_tree(ragged, (ragged != 0).long())
    assert small.node_mask.tolist() == [[True, True], [False, False]]
    assert small.visible[1].tolist() == [[True, False], [False, True]]  # padding nodes see themselves only
    with pytest.raises(ValueError, match="num_candidates"):
        build_candidate_token_tree(tokens[0], mask[0])


def test_score_candidates_pads_ragged_candidate_lists_with_minus_inf(processor):
    model = build_model("llama", processor)
    batch = processor(histories=HISTORIES, candidates=[[4, 5], [16, 17, 18]])
    scores = model.score_candidates(**batch)
    assert scores.shape == (2, 3)
    assert scores[0, 2] == float("-inf") and torch.isfinite(scores[0, :2]).all() and torch.isfinite(scores[1]).all()


def test_planted_candidate_ranks_first_and_is_generated(family, processor):
    model = build_model(family, processor)
    history, candidates, target = [1, 2, 3, 4], [7, 9, 11, 13, 15], 11
    losses = plant(model, processor, history, candidates, target, steps=100, lr=1e-2, train_lm=True)
    assert losses[-1] < 0.05 * losses[0]
    batch = processor(histories=[history], candidates=[candidates])
    scores = model.score_candidates(**batch)
    assert candidates[int(scores.argmax())] == target
    generated = model.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        cf_input_ids=batch["cf_input_ids"],
        item_ids=batch["item_ids"],
        max_new_tokens=20,
    )
    text = processor.batch_decode(generated, skip_special_tokens=True)
    match = processor.match_candidates(text, batch["candidate_ids"])[0]
    assert match.item_id == target, (text, match)


def test_lm_head_gets_a_contiguous_input_when_ranking_generating_and_training(family, processor):
    """`logits_to_keep` slices the hidden states before the LM head; on a non-contiguous batch slice of a frozen
    head, torch.matmul expands and copies the whole head weight per row (~0.3 s on CPU for a 49k vocabulary, in
    the forward and again in the backward pass). The model hands the head a contiguous copy of the kept positions
    instead, at inference and in training, and the gradient still reaches the trained projectors."""
    model = build_model(family, processor)
    seen = []
    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    inference = processor(histories=HISTORIES, candidates=CANDIDATES)
    with torch.no_grad():
        model.score_candidates(**inference)
    keys = ("input_ids", "attention_mask", "cf_input_ids", "item_ids")
    model.generate(**{k: inference[k] for k in keys}, max_new_tokens=2)
    assert len(seen) >= 3 and all(seen), seen
    seen.clear()
    batch = processor(histories=HISTORIES, candidates=CANDIDATES, targets=TARGETS)
    model.zero_grad(set_to_none=True)
    model(**model_inputs(batch)).loss.backward()
    handle.remove()
    assert seen == [True]
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    model.set_output_embeddings(head)  # registering again is a no-op: one hook per head
    assert sum(1 for _ in head._forward_pre_hooks.values()) == 1


def test_lm_head_hook_keeps_no_reference_and_the_forward_signature_lookup_is_cached():
    """The head's pre-hook must not hold on to the hidden states it saw (it was once wrapped in an lru_cache by
    mistake, which kept the last 32 inputs alive), and `_forward_parameters` is the cached one."""
    import gc
    import weakref

    from allmrec_hf.modeling_allmrec import _forward_parameters, _lm_head_input

    head = torch.nn.Linear(8, 16)
    hidden = torch.randn(2, 5, 8)[:, -2:, :]
    alive = weakref.ref(hidden)
    with torch.no_grad():
        out = _lm_head_input(head, (hidden,))
    assert out[0].is_contiguous() and torch.equal(out[0], hidden)
    del hidden, out
    gc.collect()
    assert alive() is None
    assert hasattr(_forward_parameters, "cache_info") and not hasattr(_lm_head_input, "cache_info")


def test_cold_user_with_empty_history(processor):
    model = build_model("llama", processor)
    batch = processor(histories=[[], [1, 2]], candidates=[[4, 5, 6], [7, 8, 9]])
    scores = model.score_candidates(**batch)
    assert torch.isfinite(scores).all()
    cold = model.get_user_features(torch.zeros(3, 5, dtype=torch.long))
    torch.testing.assert_close(cold[0], cold[1])  # one learned representation for every cold user


def test_text_item_embeddings_path(processor):
    model = build_model("llama", processor)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    with pytest.raises(ValueError, match="compute_text_item_latents"):
        model.score_candidates(**batch, item_embedding_source="text")
    latents = model.compute_text_item_latents(processor, batch_size=7)
    assert latents.shape == (31, 16)
    texts = processor.tokenize_item_texts([3, 12])
    torch.testing.assert_close(
        latents[[3, 12]], model.recommender.encode_texts(texts["input_ids"], texts["attention_mask"])
    )
    text_scores = model.score_candidates(**batch, item_embedding_source="text")
    cf_scores = model.score_candidates(**batch)
    assert torch.isfinite(text_scores).all() and not torch.allclose(text_scores, cf_scores)


def test_placeholder_and_item_count_mismatch_names_both_numbers(processor):
    model = build_model("llama", processor)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    item_ids = batch["item_ids"].clone()
    item_ids[0, 0] = 0
    with pytest.raises(ValueError, match=r"row 0 has 7 item placeholder tokens but 6 item ids"):
        model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            cf_input_ids=batch["cf_input_ids"],
            item_ids=item_ids,
        )
    with pytest.raises(ValueError, match="no cf_input_ids"):
        model(input_ids=batch["input_ids"], item_ids=batch["item_ids"])


def test_item_id_outside_cf_vocabulary_is_named(processor):
    model = build_model("llama", processor)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    item_ids = batch["item_ids"].clone()
    item_ids[1, 2] = 99
    with pytest.raises(ValueError, match=r"item id 99 is outside the CF model's vocabulary"):
        model(input_ids=batch["input_ids"], cf_input_ids=batch["cf_input_ids"], item_ids=item_ids)
    cf = batch["cf_input_ids"].clone()
    cf[0, -1] = 31
    with pytest.raises(ValueError, match=r"history item id 31"):
        model.get_user_features(cf)


def test_generate_and_score_need_left_padding(processor):
    model = build_model("llama", processor)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES, padding_side="right")
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            cf_input_ids=batch["cf_input_ids"],
            item_ids=batch["item_ids"],
        )
    with pytest.raises(ValueError, match="left-padded"):
        model.score_candidates(**batch)


def test_config_values_out_of_range_are_named():
    with pytest.raises(ValueError, match="item_embedding_source"):
        ALLMRecConfig(item_embedding_source="sbert")
    with pytest.raises(ValueError, match="user_token_id"):
        ALLMRecConfig(user_token_id=-1)
    with pytest.raises(ValueError, match="alpha"):
        ALLMRecAlignerConfig(alpha=-0.5)
    with pytest.raises(ValueError, match="latent_size"):
        ALLMRecAlignerConfig(latent_size=0)
    with pytest.raises(ValueError, match="hidden_dropout_prob"):
        ALLMRecAlignerConfig(cf_config={"model_type": "sasrec", "num_items": 5, "hidden_dropout_prob": 1.5})


# ------------------------------------------------------------------------------------------------ checkpoints
def save_with_language_model(model, processor, tmp_path):
    lm_dir = tmp_path / "base_lm"
    model.language_model.save_pretrained(lm_dir)
    model.config.base_model_name_or_path = str(lm_dir)
    model.config.base_model_revision = None
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    return checkpoint, lm_dir


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_adapter_checkpoint_round_trip(family, processor, tmp_path):
    model = build_model(family, processor)
    plant(model, processor, [1, 2], [3, 4, 5], 4, steps=3)  # move the projectors away from their init
    checkpoint, _ = save_with_language_model(model, processor, tmp_path)
    saved = json.loads((checkpoint / "config.json").read_text())
    assert saved["base_model_name_or_path"] and saved["language_model_included"] is False
    from safetensors import safe_open

    with safe_open(checkpoint / "model.safetensors", "pt") as handle:
        keys = list(handle.keys())
    assert keys and not any(k.startswith("language_model.") for k in keys)
    assert any(k.startswith("user_projector.") for k in keys) and any(
        k.startswith("recommender.cf_model") for k in keys
    )

    loaded = ALLMRecForConditionalGeneration.from_pretrained(checkpoint)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    torch.testing.assert_close(loaded.score_candidates(**batch), model.score_candidates(**batch), rtol=0, atol=0)


def test_self_contained_checkpoint_round_trip(processor, tmp_path):
    model = build_model("llama", processor)
    plant(model, processor, [1, 2], [3, 4, 5], 4, steps=3)
    model.save_pretrained(tmp_path / "full", include_language_model=True)
    assert json.loads((tmp_path / "full" / "config.json").read_text())["language_model_included"] is True
    loaded = ALLMRecForConditionalGeneration.from_pretrained(tmp_path / "full")
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    torch.testing.assert_close(loaded.score_candidates(**batch), model.score_candidates(**batch), rtol=0, atol=0)
    assert not model.config.language_model_included  # saving does not change the live config


def test_from_pretrained_passes_lm_kwargs_and_accepts_a_loaded_lm(processor, tmp_path):
    model = build_model("qwen2", processor)
    checkpoint, lm_dir = save_with_language_model(model, processor, tmp_path)
    loaded = ALLMRecForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.bfloat16)
    assert loaded.language_model.dtype == torch.bfloat16
    assert loaded.user_projector.linear_1.weight.dtype == torch.float32
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    assert torch.isfinite(loaded.score_candidates(**batch)).all()
    lm = AutoModelForCausalLM.from_pretrained(lm_dir)
    again = ALLMRecForConditionalGeneration.from_pretrained(checkpoint, language_model=lm)
    torch.testing.assert_close(again.score_candidates(**batch), model.score_candidates(**batch), rtol=0, atol=0)


def test_loading_with_a_mismatched_language_model_is_refused(processor, tmp_path):
    model = build_model("llama", processor)
    checkpoint, _ = save_with_language_model(model, processor, tmp_path)
    wider = AutoModelForCausalLM.from_config(
        lm_config("llama", processor.tokenizer.vocab_size).__class__(
            **{**lm_config("llama", processor.tokenizer.vocab_size).to_dict(), "hidden_size": 64}
        )
    )
    with pytest.raises(ValueError, match=r"hidden_size is 64 but this A-LLMRec checkpoint was built for 32"):
        ALLMRecForConditionalGeneration.from_pretrained(checkpoint, language_model=wider)
    other_vocab = AutoModelForCausalLM.from_config(lm_config("llama", 500))
    with pytest.raises(ValueError, match=r"vocab_size is 500 but .* built for 320"):
        ALLMRecForConditionalGeneration.from_pretrained(checkpoint, language_model=other_vocab)


def test_loading_with_a_mismatched_catalog_size_is_refused(processor, tmp_path):
    model = build_model("llama", processor)
    checkpoint, _ = save_with_language_model(model, processor, tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    config["aligner_config"]["cf_config"]["num_items"] = 40
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"item_catalog.jsonl holds 30 items but the model's CF encoder has 40"):
        ALLMRecForConditionalGeneration.from_pretrained(checkpoint)
    (checkpoint / "item_catalog.jsonl").unlink()  # no catalog beside it: the weights say it
    with pytest.raises(
        ValueError, match=r"item_embeddings.weight has shape \(31, 32\) but the model expects \(41, 32\)"
    ):
        ALLMRecForConditionalGeneration.from_pretrained(checkpoint)


def test_a_smaller_catalog_beside_the_model_is_refused_at_load(processor, tmp_path):
    """Fixed: a catalog file cut short loaded fine, and only `recommend()` noticed."""
    from allmrec_hf import ALLMRecProcessor
    from allmrec_hf.modeling_allmrec import CheckpointError

    model = build_model("llama", processor)
    checkpoint, _ = save_with_language_model(model, processor, tmp_path)
    catalog_file = checkpoint / "item_catalog.jsonl"
    catalog_file.write_text("".join(catalog_file.read_text().splitlines(keepends=True)[:25]))
    with pytest.raises(CheckpointError, match=r"item_catalog.jsonl holds 25 items but the model's CF encoder has 30"):
        ALLMRecForConditionalGeneration.from_pretrained(checkpoint)
    with pytest.raises(ValueError, match=r"item_catalog.jsonl holds 25 items but the model beside it .* has 30"):
        ALLMRecProcessor.from_pretrained(checkpoint)


@pytest.mark.parametrize("kept", [0.5, 0.0])
def test_a_truncated_weights_file_is_named_before_the_lm_loads(processor, tmp_path, kept):
    """Fixed: a cut-short model.safetensors gave safetensors' "incomplete metadata" without a file name, after the
    LM had been loaded."""
    from allmrec_hf.modeling_allmrec import CheckpointError

    model = build_model("llama", processor)
    checkpoint, lm_dir = save_with_language_model(model, processor, tmp_path)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: int(weights.stat().st_size * kept)])
    config = json.loads((checkpoint / "config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "not-loaded-first")
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"model.safetensors \([0-9,]+ bytes\) is not a readable safetensors file"
    ):
        ALLMRecForConditionalGeneration.from_pretrained(checkpoint)


def test_processor_and_model_compatibility_check(processor, tmp_path):
    model = build_model("llama", processor)
    model.check_processor(processor)
    from allmrec_hf import ALLMRecProcessor
    from conftest import make_catalog

    smaller = ALLMRecProcessor(processor.tokenizer, processor.text_encoder_tokenizer, make_catalog(12))
    with pytest.raises(ValueError, match=r"catalog has 12 items but the model's CF encoder has 30"):
        model.check_processor(smaller)


def test_adapter_checkpoint_without_base_model_reference_needs_one(processor, tmp_path):
    model = build_model("llama", processor)
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="base_model_name_or_path"):
        ALLMRecForConditionalGeneration.from_pretrained(tmp_path / "ckpt")


def lora_checkpoint(processor, tmp_path):
    """A llama model with a LoRA adapter (lora_B randomised, so the adapter changes the output), its base LM saved
    first, and the adapter-style checkpoint saved from it."""
    pytest.importorskip("peft")
    from allmrec_hf.training.lora import apply_lora

    model = build_model("llama", processor)
    lm_dir = tmp_path / "base_lm"
    model.language_model.save_pretrained(lm_dir)
    model.config.base_model_name_or_path = str(lm_dir)
    apply_lora(model, 2, alpha=4)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.2)
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    return model, checkpoint, lm_dir


def test_lora_adapter_checkpoints_round_trip(processor, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    model, checkpoint, lm_dir = lora_checkpoint(processor, tmp_path)
    assert json.loads((checkpoint / "config.json").read_text())["lm_adapter_subfolder"] == "lm_adapter"
    assert model.config.lm_adapter_subfolder is None  # saving does not change the live config
    assert not any(k.startswith("language_model.") for k in load_file(checkpoint / "model.safetensors"))
    adapter = load_file(checkpoint / "lm_adapter" / "adapter_model.safetensors")
    assert len(adapter) == 8 and all(k.startswith("base_model.model.model.layers.") for k in adapter)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    expected = model.score_candidates(**batch)
    loaded = ALLMRecForConditionalGeneration.from_pretrained(checkpoint)
    torch.testing.assert_close(loaded.score_candidates(**batch), expected, rtol=0, atol=0)
    assert not any(p.requires_grad for p in loaded.language_model.parameters())

    # A self-contained copy: the LM's base weights under their plain names, plus the same adapter.
    model.save_pretrained(tmp_path / "full", include_language_model=True)
    full_weights = load_file(tmp_path / "full" / "model.safetensors")
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in full_weights
    assert not any("lora_" in k or "base_layer" in k for k in full_weights)
    full = ALLMRecForConditionalGeneration.from_pretrained(tmp_path / "full")
    torch.testing.assert_close(full.score_candidates(**batch), expected, rtol=0, atol=0)

    # PEFT's own loader takes the adapter folder as is.
    lm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lm_dir), checkpoint / "lm_adapter").eval()
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    with torch.no_grad():
        torch.testing.assert_close(lm(input_ids=input_ids).logits, model.language_model(input_ids=input_ids).logits)

    # Only the main process writes the adapter.
    model.save_pretrained(tmp_path / "other_rank", is_main_process=False)
    assert not (tmp_path / "other_rank" / "lm_adapter").exists()


def test_lora_adapter_stays_float32_on_a_bfloat16_lm(processor, tmp_path):
    model, checkpoint, _ = lora_checkpoint(processor, tmp_path)
    loaded = ALLMRecForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.bfloat16)
    lora = {name: p for name, p in loaded.language_model.named_parameters() if "lora_" in name}
    assert len(lora) == 8 and all(p.dtype == torch.float32 for p in lora.values())
    assert loaded.language_model.model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    torch.testing.assert_close(loaded.score_candidates(**batch), model.score_candidates(**batch), rtol=0.05, atol=0.5)

    from allmrec_hf.training.lora import apply_lora

    half = build_model("llama", processor)
    half.language_model.to(torch.bfloat16)
    apply_lora(half, 2)
    assert all(p.dtype == torch.float32 for p in half.parameters() if p.requires_grad)
    assert torch.isfinite(
        half(**model_inputs(processor(histories=HISTORIES, candidates=CANDIDATES, targets=TARGETS))).loss
    )


def test_lora_adapter_folder_problems_are_named(processor, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    _, checkpoint, _ = lora_checkpoint(processor, tmp_path)
    # Options that this peft version does not know (written by a newer one) are skipped.
    config_file = checkpoint / "lm_adapter" / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "a_future_option": 1}))
    ALLMRecForConditionalGeneration.from_pretrained(checkpoint)
    weights_file = checkpoint / "lm_adapter" / "adapter_model.safetensors"
    weights = load_file(weights_file)
    dropped = sorted(weights)[0]
    save_file({k: v for k, v in weights.items() if k != dropped}, weights_file)
    with pytest.raises(ValueError, match=r"does not match its adapter_config.json: missing \['model.layers.0"):
        ALLMRecForConditionalGeneration.from_pretrained(checkpoint)
    save_file({**weights, "base_model.model.extra.lora_A.weight": weights[dropped].clone()}, weights_file)
    with pytest.raises(ValueError, match=r"unexpected \['extra.lora_A.weight'\]"):
        ALLMRecForConditionalGeneration.from_pretrained(checkpoint)
    weights_file.unlink()
    with pytest.raises(OSError, match="cannot load the language model's LoRA adapter"):
        ALLMRecForConditionalGeneration.from_pretrained(checkpoint)
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    with pytest.raises(ImportError, match="pip install peft"):
        ALLMRecForConditionalGeneration.from_pretrained(checkpoint)


def test_apply_lora_checks_its_arguments_and_lora_dropout_trains(processor):
    pytest.importorskip("peft")
    from allmrec_hf.training.lora import apply_lora

    model = build_model("llama", processor)
    with pytest.raises(ValueError, match=r"LoRA target modules \['qkv'\] are not in LlamaForCausalLM"):
        apply_lora(model, 2, target_modules=["qkv"])
    apply_lora(model, 2, dropout=0.5)
    with pytest.raises(ValueError, match="already carries a PEFT adapter"):
        apply_lora(model, 2)
    model.train()
    assert not model.language_model.training and not model.recommender.training  # frozen parts stay in eval
    layers = [m for n, m in model.language_model.named_modules() if n.endswith(("q_proj", "v_proj"))]
    assert len(layers) == 4 and all(layer.training for layer in layers)
    model.eval()
    assert not any(layer.training for layer in layers)


@pytest.mark.parametrize("include_language_model", [False, True])
def test_trust_remote_code_loading_in_a_fresh_process(processor, tmp_path, include_language_model):
    model = build_model("gemma3", processor)
    plant(model, processor, [1, 2], [3, 4, 5], 4, steps=3)
    checkpoint, _ = save_with_language_model(model, processor, tmp_path)
    if include_language_model:
        checkpoint = tmp_path / "full"
        model.save_pretrained(checkpoint, include_language_model=True)
        processor.save_pretrained(checkpoint)
    for name in (
        "configuration_allmrec.py",
        "modeling_allmrec.py",
        "modeling_sasrec.py",
        "processing_allmrec.py",
        "catalog.py",
    ):
        assert (checkpoint / name).exists(), name
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    expected = model.score_candidates(**batch)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["allmrec_hf"] = None  # the package must not be needed
        import torch
        from transformers import AutoModelForCausalLM, AutoProcessor
        processor = AutoProcessor.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        batch = processor(histories={HISTORIES!r}, candidates={CANDIDATES!r})
        print(type(model).__module__)
        print(model.score_candidates(**batch).tolist())
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    module, scores = result.stdout.strip().splitlines()[-2:]
    assert module.startswith("transformers_modules.")
    torch.testing.assert_close(torch.tensor(eval(scores)), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ stage 1
def aligner_batch(processor, positions: int = 1):
    torch.manual_seed(0)
    histories = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    cf = processor(histories=histories)["cf_input_ids"]
    positive = torch.tensor([[2, 3, 4, 13], [6, 7, 8, 14], [10, 11, 12, 15]])[:, -positions:]
    negative = torch.tensor([[20, 21, 22, 23], [24, 25, 26, 27], [28, 29, 30, 19]])[:, -positions:]

    def texts(ids):
        encoded = processor.tokenize_item_texts(ids.flatten().tolist())
        return (encoded["input_ids"].view(*ids.shape, -1), encoded["attention_mask"].view(*ids.shape, -1))

    pos_ids, pos_mask = texts(positive)
    neg_ids, neg_mask = texts(negative)
    return dict(
        cf_input_ids=cf,
        positive_ids=positive,
        negative_ids=negative,
        positive_text_input_ids=pos_ids,
        positive_text_attention_mask=pos_mask,
        negative_text_input_ids=neg_ids,
        negative_text_attention_mask=neg_mask,
    )


@pytest.mark.parametrize("positions", [1, 4])
def test_aligner_losses_and_frozen_cf_model(processor, positions):
    model = build_model("llama", processor).recommender
    model.requires_grad_(True)
    model.cf_model.requires_grad_(False)
    model.train()
    assert not model.cf_model.training
    out = model(**aligner_batch(processor, positions))
    config = model.config
    expected = (
        out.matching_loss
        + config.alpha * out.item_reconstruction_loss
        + config.beta * out.text_reconstruction_loss
        + out.recommendation_loss
    )
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert all(p.grad is None for p in model.cf_model.parameters())
    for module in (
        model.item_encoder,
        model.item_decoder,
        model.text_latent_encoder,
        model.text_latent_decoder,
        model.text_encoder.embeddings,
    ):
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())


def test_aligner_training_decreases_the_loss(processor):
    model = build_model("llama", processor).recommender
    model.requires_grad_(True)
    model.cf_model.requires_grad_(False)
    model.train()
    batch = aligner_batch(processor)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_latent_diversity_tells_collapsed_from_spread_latents():
    from allmrec_hf.modeling_allmrec import latent_diversity

    torch.manual_seed(0)
    collapsed = latent_diversity(torch.full((50, 8), 0.5) + 1e-4 * torch.randn(50, 8))
    assert collapsed["mean_pairwise_cosine"] > 0.9999 and collapsed["mean_dimension_std"] < 1e-3
    spread = latent_diversity(torch.randn(2000, 8))
    assert abs(spread["mean_pairwise_cosine"]) < 0.01 and spread["mean_dimension_std"] == pytest.approx(1, abs=0.05)
    # An offset hides spread from the raw cosine, not from the centred one.
    shifted = latent_diversity(torch.randn(2000, 8) + 10)
    assert shifted["mean_pairwise_cosine"] > 0.95 and abs(shifted["centered_mean_pairwise_cosine"]) < 0.01
    unit = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)  # the pairwise mean, computed directly
    cosines = unit @ unit.T
    assert latent_diversity(unit)["mean_pairwise_cosine"] == pytest.approx(
        float((cosines.sum() - cosines.diag().sum()) / 30), abs=1e-6
    )
    with pytest.raises(ValueError, match="at least 2 latents"):
        latent_diversity(torch.ones(1, 4))


def test_normalized_latents_with_uniformity(processor):
    """`latent_activation="normalize"`: latents on the unit sphere, the same parameter names as the paper's
    sigmoid encoders, and the uniformity term in the loss only when weighted."""
    from allmrec_hf import ALLMRecAlignerModel
    from conftest import aligner_config

    config = aligner_config(len(processor.text_encoder_tokenizer))
    paper = ALLMRecAlignerModel(config)
    config = aligner_config(len(processor.text_encoder_tokenizer))
    config.latent_activation, config.uniformity_weight = "normalize", 0.5
    model = ALLMRecAlignerModel(config).train()
    assert set(dict(model.named_parameters())) == set(dict(paper.named_parameters()))
    out = model(**aligner_batch(processor))
    torch.testing.assert_close(out.item_latents.norm(dim=-1), torch.ones(out.item_latents.shape[:-1]))
    torch.testing.assert_close(out.text_latents.norm(dim=-1), torch.ones(out.text_latents.shape[:-1]))
    expected = (
        out.matching_loss
        + config.alpha * out.item_reconstruction_loss
        + config.beta * out.text_reconstruction_loss
        + out.recommendation_loss
        + 0.5 * out.uniformity_loss
    )
    torch.testing.assert_close(out.loss, expected)
    assert float(out.uniformity_loss.detach()) < 0
    assert paper.train()(**aligner_batch(processor)).uniformity_loss is None  # the paper's loss has no such term
    # Paper's encoders at initialisation already sit at the sigmoid's midpoint; the normalised ones do not.
    assert paper.latent_diversity()["mean_dimension_std"] < 0.05 < model.latent_diversity()["mean_dimension_std"]
    with pytest.raises(ValueError, match="latent_activation must be one of sigmoid, normalize, got 'tanh'"):
        aligner_config(10).__class__(latent_activation="tanh")


def test_aligner_rejects_a_cf_model_of_another_size(processor):
    from allmrec_hf import SASRecModel

    aligner = build_model("llama", processor).recommender
    with pytest.raises(ValueError, match="hidden_size is 16 but the aligner was configured for 32"):
        aligner.set_cf_model(SASRecModel(SASRecConfig(num_items=30, hidden_size=16)))


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_forward_works_for_every_family_in_bf16(family, processor):
    model = build_model(family, processor).to(torch.bfloat16)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES, targets=TARGETS)
    assert torch.isfinite(model(**model_inputs(batch)).loss)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_wrapping_a_loaded_lm_keeps_its_attention_implementation(processor, tmp_path, attn_implementation):
    # Regression: building ALLMRecConfig(text_config=lm.config) used to reset the LM's attention implementation
    # to None, which changed its outputs.
    build_model("llama", processor).language_model.save_pretrained(tmp_path / "lm")
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm", attn_implementation=attn_implementation).eval()
    ids = processor.tokenizer("Recommend one next movie for this user", return_tensors="pt")["input_ids"]
    before = lm(input_ids=ids).logits
    config = ALLMRecConfig(
        aligner_config=build_model("llama", processor).config.aligner_config,
        text_config=lm.config,
        **processor.placeholder_token_ids,
    )
    model = ALLMRecForConditionalGeneration.from_language_model(config, lm).eval()
    assert model.language_model.config._attn_implementation == attn_implementation
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)


def test_language_model_fingerprint_tells_weights_apart_not_dtypes(processor):
    from allmrec_hf.modeling_allmrec import language_model_fingerprint

    lm = build_model("llama", processor).language_model
    fingerprint = language_model_fingerprint(lm)
    assert fingerprint.startswith("sha256:") and len(fingerprint) == 23
    assert language_model_fingerprint(copy.deepcopy(lm).to(torch.bfloat16)) == fingerprint
    other = build_model("llama", processor, seed=1).language_model  # same architecture, other weights
    assert language_model_fingerprint(other) != fingerprint
    with torch.device("meta"):
        assert language_model_fingerprint(type(lm)(lm.config)) is None
    # Past 2**24 values float32 positions round past the end: the sampled positions are exact integers.
    assert language_model_fingerprint(torch.nn.Embedding(2**24 + 3, 1)).startswith("sha256:")


def test_loading_on_other_lm_weights_than_trained_on_warns(processor, tmp_path, caplog):
    """The checkpoint records the fingerprint of the LM it was built on; loaded on another LM of the same
    architecture (a dequantised copy, another fine-tune) it says so, naming both."""
    from allmrec_hf.modeling_allmrec import language_model_fingerprint

    trained_on = build_model("llama", processor).language_model
    model = ALLMRecForConditionalGeneration.from_language_model(build_model("llama", processor).config, trained_on)
    assert model.config.base_model_fingerprint == language_model_fingerprint(trained_on)
    model.config.base_model_name_or_path = "org/lm"
    model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["base_model_fingerprint"]
    with caplog.at_level("WARNING"):
        ALLMRecForConditionalGeneration.from_pretrained(tmp_path / "ckpt", language_model=copy.deepcopy(trained_on))
    assert not [r for r in caplog.records if "fingerprint" in r.getMessage()]
    other = build_model("llama", processor, seed=1).language_model
    with caplog.at_level("WARNING"):
        ALLMRecForConditionalGeneration.from_pretrained(tmp_path / "ckpt", language_model=other)
    (warning,) = [r.getMessage() for r in caplog.records if "fingerprint" in r.getMessage()]
    assert "trained on 'org/lm'" in warning and language_model_fingerprint(other) in warning
    assert "not the same weights" in warning


def test_offline_from_pretrained_loads_a_default_lm_from_its_local_copy(processor, tmp_path, monkeypatch):
    """Offline, a checkpoint naming a Hub LM that is not in the Hub cache loads it from the local copy
    allmrec_hf's offline models provide (as the scripts do), instead of failing on the Hub."""
    import huggingface_hub

    from allmrec_hf import offline_models

    model = build_model("llama", processor)
    local = tmp_path / "local_copy"
    model.language_model.save_pretrained(local)
    model.config.base_model_name_or_path = "org/not-in-the-cache"
    model.save_pretrained(tmp_path / "ckpt")
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    monkeypatch.setattr(
        offline_models, "resolve_model_path", lambda name: str(local) if name == "org/not-in-the-cache" else name
    )
    loaded = ALLMRecForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    torch.testing.assert_close(loaded.score_candidates(**batch), model.score_candidates(**batch), rtol=0, atol=0)
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)  # online: the Hub id, unchanged
    with pytest.raises(OSError):
        ALLMRecForConditionalGeneration.from_pretrained(tmp_path / "ckpt")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_non_integer_cf_input_ids_are_refused_by_name(processor, dtype):
    """Float ids gave a RuntimeError from inside nn.Embedding; now the model names the input and its dtype."""
    model = build_model("llama", processor)
    batch = processor(histories=HISTORIES, candidates=CANDIDATES)
    batch["cf_input_ids"] = batch["cf_input_ids"].to(dtype)
    with pytest.raises(
        ValueError, match=rf"history item ids must be integer item indices \(torch.long\), got a {dtype}"
    ):
        model.score_candidates(**batch)


@pytest.mark.parametrize("head", ["generation", "ranking"])
def test_a_folder_without_config_json_is_not_a_checkpoint(tmp_path, head):
    """It built a default config and then asked for base_model_name_or_path; now it says what is wrong."""
    from allmrec_hf import ALLMRecForItemRanking

    model_class = ALLMRecForItemRanking if head == "ranking" else ALLMRecForConditionalGeneration
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"is not a checkpoint: it has no config.json"):
        model_class.from_pretrained(tmp_path)
