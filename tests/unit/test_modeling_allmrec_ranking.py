"""The ranking head (`ALLMRecForItemRanking`) on tiny random LMs of several families."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM

from allmrec_hf import ALLMRecConfig, ALLMRecForConditionalGeneration, ALLMRecForItemRanking, ALLMRecRankingConfig
from allmrec_hf.modeling_allmrec import load_language_model
from conftest import NUM_ITEMS, aligner_config, build_model, lm_config

HISTORIES = [[1, 2, 3], [4, 5, 6, 7, 8], []]


def build_ranking_model(family: str, processor, seed: int = 0, **overrides) -> ALLMRecForItemRanking:
    torch.manual_seed(seed)
    values = dict(
        aligner_config=aligner_config(len(processor.text_encoder_tokenizer)),
        text_config=lm_config(family, processor.tokenizer.vocab_size),
        item_projector_input="cf_embedding",
        output_token_id=output_token_id(processor),
        ranking_hidden_size=8,
        **processor.placeholder_token_ids,
    )
    values.update(overrides)
    return ALLMRecForItemRanking(ALLMRecRankingConfig(**values)).eval()


def output_token_id(processor) -> int:
    return processor.output_token_id  # beyond the LM's vocabulary, like the placeholders


def ranking_batch(processor, histories, shown: int = 4, targets=None):
    """Left-padded prompts: 'watched' then, per shown item, a few title tokens, [HistoryEmb] and the output token;
    an empty history gets one output token. Labels: the next item after each output token."""
    out_id, hist_id = output_token_id(processor), processor.history_token_id
    rows, items, labels = [], [], []
    for row, history in enumerate(histories):
        seen = list(history)[-shown:]
        ids = processor.tokenizer("watched", add_special_tokens=False)["input_ids"]
        for item in seen:
            ids += processor.tokenizer(f" {processor.catalog.title(item)}", add_special_tokens=False)["input_ids"][:3]
            ids += [hist_id, out_id]
        if not seen:
            ids += [out_id]
        rows.append(ids)
        items.append(seen)
        if targets is not None:
            labels.append((seen[1:] + [targets[row]]) if seen else [targets[row]])
    width = max(len(r) for r in rows)
    pad = processor.tokenizer.pad_token_id
    batch = {
        "input_ids": torch.tensor([[pad] * (width - len(r)) + r for r in rows]),
        "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows]),
        "cf_input_ids": left_pad([list(h) for h in histories]),
        "item_ids": right_pad(items),
    }
    if targets is not None:
        batch["labels"] = right_pad(labels)
    return batch


def left_pad(rows):
    width = max([len(r) for r in rows] + [1])
    return torch.tensor([[0] * (width - len(r)) + r for r in rows])


def right_pad(rows):
    width = max([len(r) for r in rows] + [1])
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


@pytest.mark.parametrize("cf_skip", [False, True])
def test_scores_equal_a_naive_per_item_computation(family, processor, cf_skip):
    model = build_ranking_model(family, processor, cf_skip=cf_skip)
    batch = ranking_batch(processor, HISTORIES)
    candidates = torch.tensor([[4, 5, 6], [9, 10, 11], [1, 2, 3]])
    scores = model.score_candidates(**batch, candidate_ids=candidates)
    for row in range(len(HISTORIES)):  # one unpadded forward per user, the head and each item by hand
        single = {k: v[row : row + 1] for k, v in batch.items()}
        keep = single["attention_mask"][0].bool()
        single["input_ids"], single["attention_mask"] = single["input_ids"][:, keep], single["attention_mask"][:, keep]
        embeds, _, _ = model.get_inputs_embeds(single["input_ids"], single["cf_input_ids"], single["item_ids"])
        hidden = model.language_model.get_decoder()(inputs_embeds=embeds).last_hidden_state[0, -1]
        user = model.user_head(hidden)
        if cf_skip:  # plus the linear map of the CF state after the last shown item (or the cold-user state)
            user = user + model.cf_skip(model.cf_model.encode(single["cf_input_ids"])[0, -1])
        for column, item in enumerate(candidates[row].tolist()):
            item_vector = model.item_head(model.cf_model.get_item_embeddings(torch.tensor(item)))
            expected = user @ item_vector / model.config.temperature + model.item_score_bias[item]
            torch.testing.assert_close(scores[row, column], expected, rtol=1e-4, atol=1e-5)


def test_whole_catalog_and_candidate_paths_agree(family, processor):
    model = build_ranking_model(family, processor)
    batch = ranking_batch(processor, HISTORIES)
    full = model.score_candidates(**batch)
    assert full.shape == (len(HISTORIES), NUM_ITEMS + 1) and bool(torch.isinf(full[:, 0]).all())
    candidates = torch.tensor([[4, 5, 6, 0], [9, 10, 11, 12], [1, 2, 3, 4]])
    scores = model.score_candidates(**batch, candidate_ids=candidates)
    torch.testing.assert_close(scores[:, :3], full.gather(1, candidates[:, :3]), rtol=1e-5, atol=1e-5)
    assert torch.isinf(scores[0, 3])  # padding candidate


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_cf_score_weight_adds_the_cf_models_own_scores(family, processor):
    model = build_ranking_model(family, processor)
    batch = ranking_batch(processor, HISTORIES)
    candidates = torch.tensor([[4, 5, 6, 0], [9, 10, 11, 12], [1, 2, 3, 4]])
    head = model.score_candidates(**batch, candidate_ids=candidates)
    cf = model.cf_model.score_items(batch["cf_input_ids"], candidates)  # SASRec's own scores of the same items
    out = model(**batch, candidate_ids=candidates, cf_score_weight=0.0, output_cf_scores=True)
    torch.testing.assert_close(out.scores, head)
    torch.testing.assert_close(out.cf_scores[:, :3], cf[:, :3], rtol=1e-5, atol=1e-5)
    assert torch.isinf(out.cf_scores[0, 3])  # padding candidate
    model.config.cf_score_weight = 0.7
    fused = model.score_candidates(**batch, candidate_ids=candidates)
    torch.testing.assert_close(fused[:, :3], head[:, :3] + 0.7 * cf[:, :3], rtol=1e-5, atol=1e-5)
    assert torch.isinf(fused[0, 3])
    catalog = model.score_candidates(**batch)  # the whole-catalog path adds the same term
    torch.testing.assert_close(fused[:, :3], catalog.gather(1, candidates[:, :3]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.score_candidates(**batch, cf_score_weight=0), model.score_candidates(
        **batch, cf_score_weight=0.0))  # fmt: skip
    # The loss is the head's alone, whatever the weight.
    targets = [4, 9, 1]
    labelled = ranking_batch(processor, HISTORIES, targets=targets)
    with_weight = model(**labelled).loss
    model.config.cf_score_weight = 0.0
    torch.testing.assert_close(model(**labelled).loss, with_weight)
    for bad in (-0.1, float("inf"), float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="cf_score_weight must be a finite number >= 0"):
            build_ranking_model("llama", processor, cf_score_weight=bad)


def test_cf_state_of_each_output_token_sees_no_later_item(processor):
    model = build_ranking_model("llama", processor)
    batch = ranking_batch(processor, HISTORIES)
    states = model.output_token_states(batch["input_ids"], batch["cf_input_ids"])
    encoded = model.cf_model.encode(batch["cf_input_ids"])
    # Row 0 shows 3 items (the last 3 of 3 positions), row 1 the last 4 of 5, row 2 (cold) one token.
    torch.testing.assert_close(states[:3], encoded[0, -3:])
    torch.testing.assert_close(states[3:7], encoded[1, -4:])
    torch.testing.assert_close(states[7], encoded[2, -1])
    other_future = ranking_batch(processor, [[1, 2, 3], [4, 5, 16, 17, 18], []])  # later items of row 1 changed
    changed = model.output_token_states(other_future["input_ids"], other_future["cf_input_ids"])
    torch.testing.assert_close(changed[3], states[3])  # the state after item 5 sees nothing after it
    assert not torch.allclose(changed[4], states[4])


@pytest.mark.parametrize("distillation_weight,uniformity_weight,cf_skip", [(0.0, 0.0, False), (0.5, 0.1, True)])
def test_gradients_reach_only_what_trains(family, processor, distillation_weight, uniformity_weight, cf_skip):
    model = build_ranking_model(
        family,
        processor,
        distillation_weight=distillation_weight,
        uniformity_weight=uniformity_weight,
        cf_skip=cf_skip,
    )
    model.train()
    assert not model.language_model.training and not model.recommender.training
    out = model(**ranking_batch(processor, HISTORIES, targets=[4, 9, 2]))
    assert (out.distillation_loss is not None) == (distillation_weight > 0)
    out.loss.backward()
    trains = ("user_projector.", "item_projector.", "output_embedding", "user_head.", "item_head.", "item_score_bias")
    trains += ("cf_user_head.",) if distillation_weight > 0 else ()
    trains += ("cf_skip.",) if cf_skip else ()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {
        name for name, _ in model.named_parameters() if name.startswith(trains)
    }
    assert all(name.startswith(trains) for name in with_grad), with_grad
    for prefix in trains:
        assert any(name.startswith(prefix) for name in with_grad), prefix


def test_planted_user_item_pattern_is_learned(processor):
    """Users who watched odd items go on to item 20, the others to item 21: the head learns it."""
    model = build_ranking_model("llama", processor, seed=1)
    histories = [[1, 3, 5], [7, 9], [3, 5, 7, 9], [2, 4, 6], [8, 10], [4, 6, 8, 10]]
    targets = [20, 20, 20, 21, 21, 21]
    batch = ranking_batch(processor, histories, targets=targets)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(60):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    scores = model.score_candidates(**ranking_batch(processor, histories), candidate_ids=torch.tensor([[20, 21]] * 6))
    assert scores.argmax(1).tolist() == [0, 0, 0, 1, 1, 1]


def test_sampled_negatives_loss_is_cross_entropy_over_positive_and_negatives(processor):
    model = build_ranking_model("llama", processor, item_bias=False)
    batch = ranking_batch(processor, [[1, 2]], targets=[3])  # two output tokens: labels 2 then 3
    negatives = torch.tensor([[[5, 6], [7, 8]]])
    out = model(**batch, negative_ids=negatives)
    users = out.user_embeddings
    pools = torch.tensor([[2, 5, 6], [3, 7, 8]])
    logits = torch.einsum("nd,nkd->nk", users, model.get_item_vectors(pools))
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_adapter_checkpoint_round_trip(family, processor, tmp_path):
    model = build_ranking_model(family, processor)
    with torch.no_grad():
        model.item_score_bias.normal_()
        model.output_embedding.normal_()
    lm_dir = tmp_path / "base_lm"
    model.language_model.save_pretrained(lm_dir)
    model.config.base_model_name_or_path = str(lm_dir)
    model.save_pretrained(tmp_path / "ranking")
    loaded = ALLMRecForItemRanking.from_pretrained(tmp_path / "ranking")
    assert isinstance(loaded.config, ALLMRecRankingConfig)
    batch = ranking_batch(processor, HISTORIES)
    torch.testing.assert_close(loaded.score_candidates(**batch), model.score_candidates(**batch), rtol=0, atol=0)
    model.config.cf_score_weight = 0.25  # the fusion weight travels in config.json
    model.save_pretrained(tmp_path / "fused")
    loaded = ALLMRecForItemRanking.from_pretrained(tmp_path / "fused")
    assert loaded.config.cf_score_weight == 0.25
    torch.testing.assert_close(loaded.score_candidates(**batch), model.score_candidates(**batch), rtol=0, atol=0)


def test_each_head_refuses_the_other_heads_checkpoint(processor, tmp_path):
    ranking = build_ranking_model("llama", processor)
    generation = build_model("llama", processor)
    lm_dir = tmp_path / "base_lm"
    ranking.language_model.save_pretrained(lm_dir)
    for model, name in ((ranking, "ranking"), (generation, "generation")):
        model.config.base_model_name_or_path = str(lm_dir)
        model.save_pretrained(tmp_path / name)
    with pytest.raises(ValueError, match="ALLMRecForItemRanking checkpoint.*not ALLMRecForConditionalGeneration"):
        ALLMRecForConditionalGeneration.from_pretrained(tmp_path / "ranking")
    with pytest.raises(ValueError, match="ALLMRecForConditionalGeneration checkpoint.*not ALLMRecForItemRanking"):
        ALLMRecForItemRanking.from_pretrained(tmp_path / "generation")
    assert isinstance(ALLMRecForConditionalGeneration.from_pretrained(tmp_path / "generation").config, ALLMRecConfig)


def test_bad_inputs_are_named(processor):
    model = build_ranking_model("llama", processor)
    batch = ranking_batch(processor, HISTORIES)
    no_output = {
        **batch,
        "input_ids": batch["input_ids"].masked_fill(batch["input_ids"] == output_token_id(processor), 5),
    }
    with pytest.raises(ValueError, match="row 0 of input_ids has no output token"):
        model(**no_output)
    with pytest.raises(ValueError, match="output tokens but its CF history holds only 2 positions"):
        model(**{**batch, "cf_input_ids": batch["cf_input_ids"][:, -2:]})
    with pytest.raises(TypeError, match="generates no text"):
        model.generate(**batch)
    with pytest.raises(ValueError, match="item_head_input must be"):
        build_ranking_model("llama", processor, item_head_input="titles")
    with pytest.raises(ValueError, match="needs the text-side latents"):
        build_ranking_model("llama", processor, item_head_input="text", item_projector_input="latent").score_candidates(
            **batch
        )


def test_trust_remote_code_loading_in_a_fresh_process(processor, tmp_path):
    model = build_ranking_model("gemma3", processor)
    with torch.no_grad():
        model.item_score_bias.normal_()
        model.output_embedding.normal_()
    lm_dir = tmp_path / "base_lm"
    model.language_model.save_pretrained(lm_dir)
    model.config.base_model_name_or_path = str(lm_dir)
    checkpoint = tmp_path / "ranking"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    for name in ("configuration_allmrec.py", "modeling_allmrec.py", "modeling_allmrec_ranking.py",
                 "processing_allmrec.py", "catalog.py"):  # fmt: skip
        assert (checkpoint / name).exists(), name
    batch = processor.ranking_inputs(HISTORIES)
    expected = model.score_candidates(**batch)[:, 1:]  # the whole catalog (column 0, padding, is -inf)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["allmrec_hf"] = None  # the package must not be needed
        from transformers import AutoModel, AutoProcessor
        processor = AutoProcessor.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        model = AutoModel.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        print(type(model).__module__, type(model).__name__)
        print(model.score_candidates(**processor.ranking_inputs({HISTORIES!r}))[:, 1:].tolist())
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    module, scores = result.stdout.strip().splitlines()[-2:]
    assert module.startswith("transformers_modules.") and module.endswith(" ALLMRecForItemRanking")
    torch.testing.assert_close(torch.tensor(eval(scores)), expected, rtol=1e-5, atol=1e-5)


def test_recommend_ranks_the_whole_catalog_without_seen_items(processor):
    model = build_ranking_model("llama", processor)
    histories = [[1, 2, 3], [4, 5, 6, 7, 8]]
    got = model.recommend(processor, histories, k=5)
    scores = model.score_candidates(**processor.ranking_inputs(histories))
    for row, history in enumerate(histories):
        items = [entry["item"] for entry in got[row]]
        assert len(items) == 5 and not set(items) & set(history) and 0 not in items
        expected = scores[row].clone()
        expected[history] = float("-inf")
        assert items == expected.topk(5).indices.tolist()
        assert [entry["score"] for entry in got[row]] == pytest.approx(expected.topk(5).values.tolist())
        assert got[row][0]["title"] == processor.catalog.title(items[0])
    with_seen = model.recommend(processor, [[1, 2, 3]], k=NUM_ITEMS, exclude_seen=False)[0]
    assert {entry["item"] for entry in with_seen} == set(range(1, NUM_ITEMS + 1))
    with pytest.raises(ValueError, match=f"only {NUM_ITEMS - 3} unseen items"):
        model.recommend(processor, [[1, 2, 3]], k=NUM_ITEMS)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        model.recommend(processor, [[1]], k=0)


def test_rank_candidates_orders_each_users_own_candidates(processor):
    model = build_ranking_model("llama", processor)
    histories, candidates = [[1, 2, 3], [4, 5]], [[9, 10, 11], [12, 13]]
    got = model.rank_candidates(processor, histories, candidates)
    full = model.score_candidates(**processor.ranking_inputs(histories))
    for row, row_candidates in enumerate(candidates):
        expected = sorted(row_candidates, key=lambda item: -float(full[row, item]))
        assert [entry["item"] for entry in got[row]] == expected
    assert len(model.rank_candidates(processor, histories, candidates, k=1)[1]) == 1


def test_pipeline_with_the_ranking_head(processor):
    from transformers import pipeline

    model = build_ranking_model("llama", processor)
    recommender = pipeline("next-item-recommendation", model=model, processor=processor)
    titles = [processor.catalog.title(i) for i in (1, 2, 3)]
    assert recommender(titles, k=3) == model.recommend(processor, [[1, 2, 3]], k=3)[0]
    ranked = recommender([1, 2, 3], candidates=[9, 10, 11], k=2)
    assert ranked == model.rank_candidates(processor, [[1, 2, 3]], [[9, 10, 11]], k=2)[0]
    with pytest.raises(ValueError, match="do not apply to a ranking head"):
        recommender([1, 2, 3], k=3, num_retrieved=10)


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt", "qwen2", "gemma3"])
def test_load_language_model_keeps_the_first_layers_unchanged(family, processor, tmp_path):
    config = lm_config(family, processor.tokenizer.vocab_size)
    config.num_hidden_layers = 3
    if getattr(config, "layer_types", None):
        config.layer_types = (config.layer_types * 2)[:3]
    full = AutoModelForCausalLM.from_config(config).eval()
    full.save_pretrained(tmp_path / "lm")
    cut = load_language_model(str(tmp_path / "lm"), 2).eval()
    assert cut.config.num_hidden_layers == 2
    if getattr(config, "layer_types", None):
        assert cut.config.layer_types == config.layer_types[:2]
    input_ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():  # after the first layer (before any final norm) both are the same computation
        expected = full(input_ids, output_hidden_states=True).hidden_states[1]
        got = cut(input_ids, output_hidden_states=True).hidden_states[1]
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in full.parameters())
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="lm_num_layers is 4 but .* has only 3 decoder layers"):
        load_language_model(str(tmp_path / "lm"), 4)


def test_lm_num_layers_checkpoint_loads_its_cut_lm(processor, tmp_path):
    full = build_ranking_model("qwen2", processor)
    lm_dir = tmp_path / "base_lm"
    full.language_model.save_pretrained(lm_dir)
    config = ALLMRecRankingConfig(
        **{**full.config.to_dict(), "lm_num_layers": 1, "base_model_name_or_path": str(lm_dir)}
    )
    assert config.text_config.num_hidden_layers == 1 and full.config.text_config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="language model has 2 decoder layers but this checkpoint runs the first 1"):
        ALLMRecForItemRanking.from_language_model(ALLMRecRankingConfig(**config.to_dict()), full.language_model)
    torch.manual_seed(0)
    model = ALLMRecForItemRanking.from_language_model(config, load_language_model(str(lm_dir), 1)).eval()
    with torch.no_grad():
        model.item_score_bias.normal_()
    model.save_pretrained(tmp_path / "ranking")
    loaded = ALLMRecForItemRanking.from_pretrained(tmp_path / "ranking")
    assert loaded.config.lm_num_layers == 1 and loaded.language_model.config.num_hidden_layers == 1
    batch = ranking_batch(processor, HISTORIES)
    torch.testing.assert_close(loaded.score_candidates(**batch), model.score_candidates(**batch), rtol=0, atol=0)
    with pytest.raises(ValueError, match="lm_num_layers must be a positive integer or None, got 0"):
        ALLMRecRankingConfig(**{**config.to_dict(), "lm_num_layers": 0})
    with pytest.raises(ValueError, match="lm_num_layers is 3 but text_config has only"):
        ALLMRecRankingConfig(**{**full.config.to_dict(), "lm_num_layers": 3})
