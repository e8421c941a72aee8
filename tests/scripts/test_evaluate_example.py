"""`examples/evaluate.py` end to end on the tiny dataset and tiny stage-2 checkpoints, and the evaluator's parts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from allmrec_hf import ALLMRecForConditionalGeneration, ALLMRecProcessor
from allmrec_hf.data import PreparedDataset
from allmrec_hf.evaluation.evaluator import (
    MISSED,
    cf_full_catalog_ranks,
    full_catalog_metrics,
    lm_candidate_outputs,
    scenario_metrics,
    select_rows,
)
from allmrec_hf.evaluation.metrics import ranking_metrics, target_ranks
from allmrec_hf.training.builders import load_cf_model
from training_helpers import example_module

LM_METHODS = ["LLM-only", "MLP-LLM", "A-LLMRec", "A-LLMRec (SBERT)"]


def evaluate_args(stage2_runs, cf_run, tiny_dataset, output, *extra):
    return [
        "--dataset_dir", tiny_dataset, "--output_dir", str(output),
        "--allmrec_model_path", stage2_runs["a-llmrec"].output_dir,
        "--mlp_llm_model_path", stage2_runs["mlp_llm"].output_dir,
        "--llm_only_model_path", stage2_runs["llm_only"].output_dir,
        "--cf_model_path", cf_run.output_dir, "--batch_size", "3", "--disable_tqdm", "true",
        "--max_new_tokens", "6", "--num_retrieved", "8", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def evaluation(stage2_runs, cf_run, tiny_dataset, tmp_path_factory):
    output = tmp_path_factory.mktemp("evaluation")
    results = example_module("evaluate").main(evaluate_args(stage2_runs, cf_run, tiny_dataset, output))
    return output, results


def test_evaluate_writes_all_three_outputs(evaluation):
    output, results = evaluation
    assert {"results.json", "results.md", "hit_at_k.png", "scenarios.png"} <= set(os.listdir(output))
    for png in ("hit_at_k.png", "scenarios.png"):
        assert open(output / png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((output / "results.json").read_text())
    assert list(saved["methods"]) == ["SASRec", "Popularity", *LM_METHODS]
    assert set(saved["scenarios"]) == {"test", "cold_items", "warm_items"}  # the tiny data has no cold users
    table = (output / "results.md").read_text()
    for heading in ["Hit@1, generation mode", "strict rule", "Valid answers", "Ranking mode", "Full catalog"]:
        assert heading in table
    for method in ["SASRec", "Popularity", *LM_METHODS]:
        assert f"| {method} |" in table
    assert "SASRec, Popularity rank every unseen item; LLM-only, MLP-LLM, A-LLMRec, A-LLMRec (SBERT) rerank" in table


def test_every_method_mode_and_scenario_is_measured(evaluation, tiny_dataset):
    _, results = evaluation
    data = PreparedDataset.load(tiny_dataset)
    assert results["scenarios"]["test"]["num_users"] == len(data.scenario("test"))
    for scenario in results["scenarios"]:
        by_method = results["results"][scenario]
        assert set(by_method["SASRec"]) == {"ranking"}  # the CF model has no generation mode
        assert set(by_method["Popularity"]) == {"ranking"}
        for method in LM_METHODS:
            assert set(by_method[method]) == {"generation", "ranking"}
            generation = by_method[method]["generation"]
            assert 0 <= generation["hit@1_strict"] <= generation["hit@1_substring"] <= 1
            assert 0 <= generation["hit@1_strict"] <= generation["valid_answer_rate"] <= 1
            ranking = by_method[method]["ranking"]
            assert 0 <= ranking["hit@1"] <= ranking["hit@5"] <= 1 and 0 < ranking["mrr"] <= 1
            assert len(ranking["hit_curve"]) == results["num_candidates"] and ranking["hit_curve"][-1] == 1.0
    assert set(results["full_catalog"]["results"]) == {"SASRec", "Popularity", *LM_METHODS}


def test_cf_figures_match_a_direct_computation(evaluation, cf_run, tiny_dataset):
    _, results = evaluation
    data = PreparedDataset.load(tiny_dataset)
    test = data.scenario("test")
    cf = load_cf_model(cf_run.output_dir, data.catalog).eval()
    with torch.no_grad():
        scores = []
        for history, candidates in zip(test["history"], test["candidates"], strict=True):
            inputs = torch.tensor([history[-cf.config.max_seq_length :]])
            scores.append(cf.score_items(inputs, torch.tensor([candidates]))[0].numpy())
    positions = np.array([c.index(t) for c, t in zip(test["candidates"], test["target"], strict=True)])
    expected = ranking_metrics(target_ranks(np.stack(scores), positions), (1, 5))
    got = results["results"]["test"]["SASRec"]["ranking"]
    assert {k: got[k] for k in expected} == pytest.approx(expected)


def test_evaluate_is_deterministic(evaluation, stage2_runs, cf_run, tiny_dataset, tmp_path):
    output, first = evaluation
    args = evaluate_args(stage2_runs, cf_run, tiny_dataset, tmp_path, "--plots", "false")
    second = example_module("evaluate").main(args)
    assert json.loads(json.dumps(second["results"])) == json.loads(json.dumps(first["results"]))
    assert second["full_catalog"] == first["full_catalog"]


def test_max_users_samples_each_scenario_under_the_seed(tiny_dataset):
    data = PreparedDataset.load(tiny_dataset)
    rows = select_rows(data, ["test", "cold_items"], max_users=4, seed=1)
    again = select_rows(data, ["cold_items", "test"], max_users=4, seed=1)
    assert len(rows.scenarios["test"]) == 4
    pick = lambda r, s: sorted(r.users[i] for i in r.scenarios[s])  # noqa: E731
    assert pick(rows, "test") == pick(again, "test") and pick(rows, "cold_items") == pick(again, "cold_items")
    assert (
        pick(select_rows(data, ["test"], max_users=4, seed=2), "test") != pick(rows, "test")
        or len(data.scenario("test")) <= 4
    )
    # A user in two scenarios is one row.
    assert len(rows) == len(set(zip(rows.splits, rows.users, strict=True)))


def test_full_catalog_ranks_exclude_the_history(cf_run, tiny_dataset):
    data = PreparedDataset.load(tiny_dataset)
    rows = select_rows(data, ["test"])
    cf = load_cf_model(cf_run.output_dir, data.catalog).eval()
    ranks = cf_full_catalog_ranks(cf, rows, batch_size=5, disable_tqdm=True)
    with torch.no_grad():
        for i, history in enumerate(rows.histories):
            scores = cf.score_all_items(torch.tensor([history[-cf.config.max_seq_length :]]))[0]
            scores[history] = float("-inf")
            target_score = scores[rows.targets[i]]
            assert ranks[i] == int((scores > target_score).sum()) or (ranks[i] >= (scores >= target_score).sum() - 1)
    # A target the user already had is a miss.
    rows.histories[0] = rows.histories[0] + [rows.targets[0]]
    assert cf_full_catalog_ranks(cf, rows, disable_tqdm=True)[0] == MISSED
    assert full_catalog_metrics(np.array([0.0, MISSED]), (1, 5)) == {
        "hit@1": 0.5, "ndcg@1": 0.5, "hit@5": 0.5, "ndcg@5": 0.5, "mrr": 0.5
    }  # fmt: skip


def test_bad_arguments_fail_before_any_model_is_loaded(stage2_runs, cf_run, tiny_dataset, tmp_path):
    main = example_module("evaluate").main
    with pytest.raises(ValueError, match="nothing to evaluate"):
        main(["--dataset_dir", tiny_dataset, "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="not a stage-2"):
        main(["--dataset_dir", tiny_dataset, "--output_dir", str(tmp_path), "--allmrec_model_path", cf_run.output_dir])
    with pytest.raises(ValueError, match="--modes"):
        main(evaluate_args(stage2_runs, cf_run, tiny_dataset, tmp_path, "--modes", "ranking,beam"))
    with pytest.raises(KeyError, match="cold_users"):
        main(evaluate_args(stage2_runs, cf_run, tiny_dataset, tmp_path, "--scenarios", "cold_users"))
    assert not os.listdir(tmp_path)


def test_ranking_and_generation_agree_where_the_answer_is_planted(stage2_runs, tiny_dataset):
    """Teach the tiny LM (unfrozen here) each test user's target: both modes must then pick the target, and the
    generated answer is the top-ranked candidate."""
    output = stage2_runs["a-llmrec"].output_dir
    model = ALLMRecForConditionalGeneration.from_pretrained(output, base_model_name_or_path=_lm_of(output))
    processor = ALLMRecProcessor.from_pretrained(output)
    data = PreparedDataset.load(tiny_dataset)
    rows = select_rows(data, ["test"])
    batch = processor(histories=rows.histories, candidates=rows.candidates, targets=rows.targets)
    model.language_model.requires_grad_(True)
    model.train()
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.language_model.parameters(), lr=3e-2)
    fields = ("input_ids", "attention_mask", "cf_input_ids", "item_ids", "labels")
    for _ in range(60):
        loss = model(**{k: batch[k] for k in fields}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    model.eval()
    outputs = lm_candidate_outputs(model, processor, rows, batch_size=4, disable_tqdm=True)
    metrics = scenario_metrics(rows, data.catalog, outputs["answers"], outputs["scores"], ks=(1,))["test"]
    assert metrics["generation"]["hit@1_strict"] == 1.0 and metrics["ranking"]["hit@1"] == 1.0
    matched = [m.item_id for m in processor.match_candidates(outputs["answers"], rows.candidates)]
    top = [c[int(np.argmax(s[: len(c)]))] for c, s in zip(rows.candidates, outputs["scores"], strict=True)]
    assert matched == top == rows.targets


def _lm_of(checkpoint):
    from allmrec_hf import ALLMRecConfig

    return ALLMRecConfig.from_pretrained(checkpoint).base_model_name_or_path


def test_cross_domain(evaluation, stage2_runs, cf_run, tiny_dataset, training_root, tmp_path):
    """Another domain's items (other ids, other titles): A-LLMRec (SBERT) and LLM-only rank them; the CF model
    and the CF-embedding methods cannot represent them and are left out."""
    from training_helpers import write_dataset

    other = write_dataset(training_root / "data_cross_domain", id_prefix="x", num_items=41, seed=3)
    args = evaluate_args(stage2_runs, cf_run, tiny_dataset, tmp_path, "--cross_domain_dataset_dir", other)
    results = example_module("evaluate").main(args + ["--cross_domain_noun", "game", "--plots", "false"])
    scenario = results["scenarios"]["cross_domain"]
    assert scenario["num_users"] == len(PreparedDataset.load(other).scenario("test"))
    assert scenario["history_items_shared"] == 0 and scenario["candidates_shared"] == 0
    cross = results["results"]["cross_domain"]
    assert set(cross) == {"LLM-only", "A-LLMRec (SBERT)"}
    for method in cross.values():
        assert set(method) == {"generation", "ranking"} and 0 <= method["ranking"]["hit@1"] <= 1
    assert "Cross-domain" in (tmp_path / "results.md").read_text()
    # In-domain figures are those of the same evaluation without the extra scenario.
    assert results["results"]["test"] == evaluation[1]["results"]["test"]


def test_cross_domain_prompt_and_items(stage2_runs, training_root, tiny_dataset):
    """The prompt shows the other domain's titles and nouns, the text-side item embeddings are that catalog's,
    and the CF model reads only the shared history items."""
    from allmrec_hf.evaluation.evaluator import map_items, processor_for_catalog, text_item_latents
    from training_helpers import write_dataset

    output = stage2_runs["a-llmrec"].output_dir
    model = ALLMRecForConditionalGeneration.from_pretrained(output, base_model_name_or_path=_lm_of(output))
    source = ALLMRecProcessor.from_pretrained(output)
    other = PreparedDataset.load(write_dataset(training_root / "data_cross_domain_2", id_prefix="y", num_items=41))
    processor = processor_for_catalog(source, other.catalog, noun="game", verb="play")
    rows = select_rows(other, ["test"])
    prompt = processor.decode(processor(histories=rows.histories[:1], candidates=rows.candidates[:1])["input_ids"][0])
    assert "game" in prompt and other.catalog.title(rows.candidates[0][0]) in prompt
    assert source.prompt_template.noun == "movie" and source.catalog.num_items != other.catalog.num_items
    latents = model.compute_text_item_latents(processor, store=False)
    assert latents.shape[0] == other.catalog.num_items + 1 and model.text_item_latents is None
    with text_item_latents(model, latents):
        features = model.get_item_features(torch.tensor([[1, 2]]), source="text")
    assert model.text_item_latents is None
    expected = model.item_projector(latents[[1, 2]])
    assert torch.allclose(features[0], expected)
    # Shared ids map back: the tiny dataset's own items seen through a copy of its catalog.
    data = PreparedDataset.load(tiny_dataset)
    histories, candidates, counts = map_items(select_rows(data, ["test"]), data.catalog, data.catalog)
    assert counts["history_items_shared"] == counts["history_items"] and all(all(c) for c in candidates)
