"""Model cards (`allmrec_hf.model_card`): the README.md every training script writes, its YAML metadata and
model-index, its runnable loading code, and the evaluation results `examples/evaluate.py` puts into it."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest
from huggingface_hub import ModelCard

from allmrec_hf import ALLMRecAlignerConfig, ALLMRecConfig
from allmrec_hf.data import PreparedDataset
from allmrec_hf.model_card import (
    CARD_TEMPLATE,
    EVALUATION_END,
    EVALUATION_START,
    SCORING,
    build_model_card,
    update_model_card,
    write_model_card,
)
from training_helpers import REPO, example_module

SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"


def load_card(folder) -> ModelCard:
    path = os.path.join(folder, "README.md")
    assert os.path.isfile(path), f"no model card in {folder}"
    return ModelCard.load(path)


def python_blocks(card: ModelCard) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card.text, flags=re.S)


@pytest.fixture(scope="module")
def runs(cf_run, stage1_run, stage2_runs) -> dict:
    return {"cf": cf_run, "aligner": stage1_run, **stage2_runs}


def test_every_training_script_writes_a_card(runs, tiny_dataset):
    for name, run in runs.items():
        card = load_card(run.output_dir)
        data = card.data
        assert data.library_name == "transformers", name
        assert data.pipeline_tag == "other", name
        assert {"recommendation", "sequential-recommendation", "a-llmrec"} <= set(data.tags), name
        text = card.text
        assert "**tiny**, prepared with `examples/prepare_data.py`" in text, name  # the dataset, by name
        stats = PreparedDataset.load(tiny_dataset).statistics()
        assert f"| {stats['users']} | {stats['items']} | {stats['interactions']} |" in text, name
        for heading in ["## Model details", "## Training data", "## Training", "## Evaluation", "## How to use",
                        "## Limitations", "## Citation"]:  # fmt: skip
            assert heading in text, (name, heading)
        assert "trust_remote_code=True" in text and ".from_pretrained(checkpoint" in text, name
        assert "eprint    = {2404.11343}" in text, name
        assert "Kim, Sein and Kang, Hongseok and Choi, Seungyoon" in text, name
        assert not data.get("datasets"), name  # the tiny dataset is not on the Hub: named in the body only
        assert str(REPO) not in text and tiny_dataset not in text, name  # no local paths besides the checkpoint's


def test_cf_card_has_its_validation_and_test_results_with_the_protocol(cf_run):
    card = load_card(cf_run.output_dir)
    results = json.loads(open(os.path.join(cf_run.output_dir, "all_results.json")).read())
    assert card.data.metrics == ["hit_rate", "ndcg", "mrr"]
    assert "sasrec" in card.data.tags and card.data.base_model is None  # trained from scratch
    entries = card.data.eval_results
    assert {e.dataset_split for e in entries} == {"validation", "test"}
    for entry in entries:
        assert entry.task_type == "sequential-recommendation" and entry.dataset_name == "tiny"
        args = entry.metric_args
        assert args["candidates"] == 6 and args["negatives"] == 5 and args["mode"] == "ranking"
        assert "uniform" in args["negative_sampling"] and args["candidate_seed"] == 0
        prefix = "eval" if entry.dataset_split == "validation" else "test"
        key = {"hit_rate": f"hit@{args.get('k')}", "ndcg": f"ndcg@{args.get('k')}", "mrr": "mrr"}[entry.metric_type]
        assert entry.metric_value == pytest.approx(results[f"{prefix}_{key}"], abs=1e-4)
    assert f"| Test | {results['test_hit@1']:.4f} |" in card.text
    assert "SASRec: hidden size 32, 40 items" in card.text


def test_stage_cards_describe_their_model(runs):
    aligner = load_card(runs["aligner"].output_dir)
    assert "A-LLMRec stage-1 aligner" in aligner.text and "Joint latent | 16 dimensions" in aligner.text
    assert "`text_encoder` (a local folder)" in aligner.text
    assert aligner.data.get("model-index") is None and not aligner.data.eval_results  # nothing evaluated
    for name, title, tag in [("a-llmrec", "# A-LLMRec: lm_llama", None), ("mlp_llm", "# MLP-LLM", "mlp-llm"),
                             ("llm_only", "# LLM-only", "llm-only")]:  # fmt: skip
        card = load_card(runs[name].output_dir)
        assert card.text.lstrip("\n").split("\n## ")[0].count(title) == 1, name
        assert "`lm_llama` (a local folder): llama, hidden size 32, 2 layers" in card.text, name
        assert "| Candidates per training prompt | 3 |" in card.text, name
        assert "next-item-recommendation" in card.data.tags and (tag is None or tag in card.data.tags), name
        assert card.data.base_model is None, name  # a local LM folder is not a Hub id
        assert "Not evaluated yet" in card.text and not card.data.eval_results, name
    assert "Sentence encoder" in load_card(runs["a-llmrec"].output_dir).text
    assert "Sentence encoder" not in load_card(runs["mlp_llm"].output_dir).text


def test_base_model_is_the_hub_id_the_checkpoint_names(runs):
    config = ALLMRecConfig.from_pretrained(runs["a-llmrec"].output_dir)
    config.base_model_name_or_path = SMOLLM
    card = build_model_card("recommender", runs["a-llmrec"].output_dir, config)
    assert card.data.base_model == SMOLLM and card.data.base_model_relation == "adapter"
    assert f"[{SMOLLM}](https://huggingface.co/{SMOLLM})" in card.text
    aligner = ALLMRecAlignerConfig.from_pretrained(runs["aligner"].output_dir)
    aligner.text_encoder_name_or_path = "sentence-transformers/all-MiniLM-L6-v2"
    card = build_model_card(None, runs["aligner"].output_dir, aligner)  # kind from the config
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.base_model_relation == "finetune"


@pytest.mark.parametrize("name", ["cf", "aligner", "a-llmrec", "llm_only"])
def test_the_cards_loading_code_runs(runs, name):
    folder = runs[name].output_dir
    blocks = python_blocks(load_card(folder))
    assert len(blocks) >= 2 and "trust_remote_code=True" in blocks[-1]
    code = "\n".join(blocks)
    assert code.count("checkpoint = ") == 1
    code = re.sub(r"^checkpoint = .*$", f"checkpoint = {folder!r}", code, flags=re.M)
    namespace: dict = {}
    start = time.perf_counter()
    exec(compile(code, f"<model card of {name}>", "exec"), namespace)
    assert time.perf_counter() - start < 20
    if name in ("a-llmrec", "llm_only"):
        assert len(namespace["recommendations"][0]) == 5 and "title" in namespace["recommendations"][0][0]
        assert type(namespace["model"]).__name__ == "ALLMRecForConditionalGeneration"


def test_evaluate_writes_its_results_into_the_cards(stage2_runs, cf_run, tiny_dataset, tmp_path):
    allmrec, cf = tmp_path / "a-llmrec", tmp_path / "cf"
    shutil.copytree(stage2_runs["a-llmrec"].output_dir, allmrec)
    shutil.copytree(cf_run.output_dir, cf)
    card_file = allmrec / "README.md"
    card_file.write_text(card_file.read_text() + "\nA note of my own.\n")  # a hand edit outside the section
    (cf / "README.md").unlink()  # a checkpoint without a card gets a whole new one
    output = tmp_path / "evaluation"
    results = example_module("evaluate").main(
        ["--dataset_dir", tiny_dataset, "--output_dir", str(output), "--allmrec_model_path", str(allmrec),
         "--cf_model_path", str(cf), "--item_embedding_sources", "cf,text", "--max_users", "4",
         "--max_generation_users", "2", "--batch_size", "4", "--max_new_tokens", "6", "--num_retrieved", "8",
         "--plots", "false", "--disable_tqdm", "true", "--update_model_card", "true"]
    )  # fmt: skip

    card = load_card(allmrec)
    assert "A note of my own." in card.text and card.text.count(EVALUATION_START) == 1
    assert "Not evaluated yet" not in card.text and "| **A-LLMRec** (this model) |" in card.text
    assert "| **A-LLMRec (SBERT)** (this model) |" in card.text and "| SASRec |" in card.text
    entries = card.data.eval_results
    assert {e.metric_args["method"] for e in entries} == {"A-LLMRec", "A-LLMRec (SBERT)"}
    assert {e.dataset_split for e in entries} == {"test"} and card.data.model_name == "a-llmrec"
    by_name = {e.metric_name: e for e in entries}
    hit = by_name["A-LLMRec Hit@1 (generation, substring rule)"]
    assert hit.metric_args["mode"] == "generation" and hit.metric_args["users"] == 2
    assert hit.metric_args["candidates"] == 6 and hit.metric_args["negatives"] == 5
    test = results["results"]["test"]
    assert hit.metric_value == pytest.approx(test["A-LLMRec"]["generation"]["hit@1_substring"], abs=1e-4)
    ranking = by_name["A-LLMRec (SBERT) NDCG@5 (ranking)"]
    assert ranking.metric_args["item_embeddings"] == "text" and ranking.metric_args["users"] == 4
    assert ranking.metric_value == pytest.approx(test["A-LLMRec (SBERT)"]["ranking"]["ndcg@5"], abs=1e-4)
    full = by_name["A-LLMRec MRR (full catalog)"]
    assert full.metric_args["retrieved_by_cf"] == 8 and full.metric_config == "full-catalog"

    cf_card = load_card(cf)
    assert "sasrec" in cf_card.data.tags and "| **SASRec** (this model) |" in cf_card.text
    assert {e.metric_args["method"] for e in cf_card.data.eval_results} == {"SASRec"}
    tested = [e for e in cf_card.data.eval_results if e.dataset_split == "test"]
    assert tested and {e.metric_args["scoring"] for e in tested} == {SCORING["cf"]}  # evaluate.py's
    assert {e.dataset_split for e in cf_card.data.eval_results} == {"validation", "test"}  # the run's own kept
    assert not (output / "README.md").exists()

    # Evaluating again replaces the results; the card stays one card.
    update_model_card(allmrec, results, dataset=PreparedDataset.load(tiny_dataset))
    again = load_card(allmrec)
    assert len(again.data.eval_results) == len(entries) and again.text.count(EVALUATION_END) == 1


def test_a_hand_written_card_gets_an_evaluation_section(cf_run, tmp_path):
    folder = tmp_path / "cf"
    shutil.copytree(cf_run.output_dir, folder)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n\n# My SASRec\n\nWritten by hand.\n")
    ranking = {"hit@1": 0.5, "hit@5": 1.0, "ndcg@5": 0.8, "mrr": 0.7}
    results = {"dataset": "tiny", "num_candidates": 6, "ks": [1, 5], "scenarios": {"test": {"num_users": 2}},
               "methods": {"SASRec": {"kind": "cf", "checkpoint": str(folder)}},
               "results": {"test": {"SASRec": {"ranking": ranking}}}}  # fmt: skip
    assert update_model_card(folder, results) == str(folder / "README.md")
    card = load_card(folder)
    assert card.data.license == "mit" and "Written by hand." in card.text
    assert card.text.index("Written by hand.") < card.text.index(EVALUATION_START) < card.text.index(EVALUATION_END)
    assert "| **SASRec** (this model) | 0.5000 | 1.0000 | 0.8000 | 0.7000 |" in card.text
    assert [(e.metric_name, e.metric_value) for e in card.data.eval_results][0] == ("SASRec Hit@1 (ranking)", 0.5)
    assert update_model_card(folder, results) and load_card(folder).text.count(EVALUATION_START) == 1


def test_a_card_problem_never_fails_the_run(tmp_path, caplog):
    assert write_model_card("cf", tmp_path) is None  # no config.json: logged, not raised
    assert "Could not write the model card" in caplog.text and not (tmp_path / "README.md").exists()
    with pytest.raises(ValueError, match="no config.json"):
        write_model_card("cf", tmp_path, strict=True)
    assert update_model_card(tmp_path, {"methods": {}}) is None


def test_the_template_ships_inside_the_package():
    import allmrec_hf

    assert CARD_TEMPLATE.is_file() and str(CARD_TEMPLATE.parent.parent) == os.path.dirname(allmrec_hf.__file__)
    assert '"model_cards/*.md"' in (REPO / "setup.py").read_text()  # package data of wheels and sdists
    assert (REPO / "model_cards" / "README.md").is_file()
