"""The ranking head's training (`examples/train_ranking_head.py`, `RankingTrainer`, `RankingCollator`) end to end
on tiny data: the loss goes down, validation NDCG@10 is measured every epoch and the best epoch kept, only the
projectors, the output token and the heads change, the output loads back as a recommender with the same scores,
an interrupted run resumes to the same weights, sampled negatives and stage-1 latents, and bad input refused."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from allmrec_hf import ALLMRecForItemRanking, ALLMRecProcessor
from allmrec_hf.data import PreparedDataset
from allmrec_hf.evaluation.metrics import ranking_metrics, target_ranks
from allmrec_hf.model_card import SCORING
from allmrec_hf.training.collators import RankingCollator
from allmrec_hf.training.trainers import RankingTrainer
from training_helpers import NUM_ITEMS, InterruptAt, Interrupted, ranking_command, run_example


def _rows(*rows):
    return [dict(zip(("user", "history", "target", "cut"), row, strict=True)) for row in rows]


# ============================================================================================ collator
def test_ranking_collator_labels_every_output_token(processor):
    batch = RankingCollator(processor, NUM_ITEMS)(_rows((3, [1, 2, 3], 4, 0), (5, [7], 9, 0)))
    assert batch["labels"].tolist() == [[2, 3, 4], [9, 0, 0]]
    assert "negative_ids" not in batch
    expected = processor.ranking_inputs([[1, 2, 3], [7]], targets=[4, 9])
    assert set(batch) == set(expected)
    assert all(torch.equal(batch[key], expected[key]) for key in expected)


def test_ranking_collator_negatives_are_unseen_and_seeded(processor):
    rows = _rows((3, [1, 2, 3, 5, 8], 13, 0), (3, [1, 2], 3, 1), (6, [20], 21, 0))
    collator = RankingCollator(processor, NUM_ITEMS, num_negatives=7, seed=1)
    batch = collator(rows)
    negatives, labels = batch["negative_ids"], batch["labels"]
    assert negatives.shape == (*labels.shape, 7)
    for i, row in enumerate(rows):
        steps = int((labels[i] != 0).sum())
        drawn = negatives[i, :steps]
        assert drawn.min() >= 1 and drawn.max() <= NUM_ITEMS
        assert not set(drawn.flatten().tolist()) & (set(row["history"]) | {row["target"]})
        assert not negatives[i, steps:].any()  # nothing drawn where there is no label
    again = RankingCollator(processor, NUM_ITEMS, num_negatives=7, seed=1)(rows)
    assert torch.equal(again["negative_ids"], negatives)
    collator.set_epoch(1)
    assert not torch.equal(collator(rows)["negative_ids"], negatives)  # fresh negatives every epoch
    # The same user's cut points draw different negatives (their own stream).
    assert not torch.equal(negatives[0, :2], negatives[1, :2])
    with pytest.raises(ValueError, match="num_negatives"):
        RankingCollator(processor, NUM_ITEMS, num_negatives=-1)


# ============================================================================================= script
def test_ranking_head_learns_and_keeps_the_best_epoch(ranking_run):
    history = ranking_run.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 16  # 4 epochs of 4 steps, logged every step
    first, last = float(np.mean(losses[:4])), float(np.mean(losses[-4:]))
    assert last < 0.8 * first, losses
    assert all("ranking_loss" in entry for entry in history if "loss" in entry)
    evaluations = [entry["eval_ndcg@10"] for entry in history if "eval_ndcg@10" in entry][:4]
    assert len(evaluations) == 4  # one per epoch
    trainer, results = ranking_run.trainer, ranking_run.results
    assert trainer.state.best_metric == max(evaluations)
    assert results["eval_ndcg@10"] == trainer.state.best_metric  # the best epoch was reloaded
    for split in ("eval", "test"):
        assert 0 < results[f"{split}_ndcg@10"] <= results[f"{split}_hit@10"] <= 1
        assert results[f"{split}_hit@1"] <= results[f"{split}_hit@5"] <= results[f"{split}_hit@10"]
    assert results["head"] == "ranking"
    assert 1 <= len(glob.glob(os.path.join(ranking_run.output_dir, "checkpoint-*"))) <= 2  # save_total_limit


def test_ranking_head_trains_only_the_projectors_and_heads(ranking_run):
    model = ranking_run.trainer.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith(("language_model.", "recommender.")) for name in trainable)
    assert any(name.startswith("item_head.") for name in trainable)
    assert any(name.startswith("user_head.") for name in trainable)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), ranking_run.initial[name])}
    assert changed <= trainable
    assert any(name.startswith("item_head.") for name in changed) and any("projector" in name for name in changed)


def test_ranking_head_output_loads_back_as_a_recommender(ranking_run, tiny_dataset):
    output = ranking_run.output_dir
    loaded = ALLMRecForItemRanking.from_pretrained(output).eval()
    processor = ALLMRecProcessor.from_pretrained(output)
    assert processor.output_token_id == loaded.config.output_token_id
    split = PreparedDataset.load(tiny_dataset).splits["test"]
    batch = processor.ranking_inputs([list(h) for h in split["history"]])
    candidates = torch.tensor(split["candidates"])
    trained = ranking_run.trainer.model.eval()
    got = loaded.score_candidates(**batch, candidate_ids=candidates)
    assert torch.equal(got, trained.score_candidates(**batch, candidate_ids=candidates))
    # The test figures in all_results.json follow from these scores.
    target_scores = got.gather(1, (candidates == torch.tensor(split["target"])[:, None]).float().argmax(1, True))
    ranks = ((got >= target_scores).sum(1) - 1).numpy()
    assert ranking_run.results["test_hit@1"] == pytest.approx(float((ranks < 1).mean()))
    whole = loaded.score_candidates(**batch)
    assert whole.shape == (len(split), NUM_ITEMS + 1)
    assert torch.allclose(whole.gather(1, candidates), got, atol=1e-5)


def test_ranking_head_resumes_to_the_same_weights(ranking_run, cf_run, tiny_dataset, lm_dir, tmp_path):
    command = ranking_command(tiny_dataset, lm_dir("llama"), tmp_path / "run", ["--cf_model_path", cf_run.output_dir])
    with pytest.raises(Interrupted):
        run_example("train_ranking_head", command, callbacks=[InterruptAt(6)])
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint-4"]
    resumed = run_example("train_ranking_head", command)  # the same command again resumes
    assert resumed.trainer.state.global_step == 16
    expected = dict(ranking_run.trainer.model.named_parameters())
    for name, p in resumed.trainer.model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, expected[name]), name
    assert resumed.results["test_ndcg@10"] == ranking_run.results["test_ndcg@10"]


def test_ranking_head_with_sampled_negatives(cf_run, tiny_dataset, lm_dir, tmp_path):
    command = ranking_command(
        tiny_dataset, lm_dir("llama"), tmp_path / "run", ["--cf_model_path", cf_run.output_dir],
        "--num_negatives", "5", "--num_train_epochs", "2", "--distillation_weight", "0.5",
        "--uniformity_weight", "0.1", "--cf_skip", "true", "--lm_num_layers", "1",
        "--history_titles", "true", "--ranking_item_text", "{title}, {description}",
    )  # fmt: skip
    run = run_example("train_ranking_head", command)
    loaded = ALLMRecForItemRanking.from_pretrained(run.output_dir)
    processor = ALLMRecProcessor.from_pretrained(run.output_dir)  # the prompt shows the descriptions too
    assert processor.prompt_template.ranking_item_text == "{title}, {description}"
    item = next(i for i in range(1, NUM_ITEMS + 1) if processor.catalog.field(i, "description"))
    assert processor.catalog.field(item, "description") in processor.ranking_item_text(item)
    assert loaded.config.cf_skip and loaded.config.lm_num_layers == 1
    assert loaded.language_model.config.num_hidden_layers == 1  # the tiny LM has 2: the cut travels
    card = (Path(run.output_dir) / "README.md").read_text()
    assert (
        "after the LM's first 1 decoder layers" in card
        and "| LM decoder layers run (the first N; unset: all) | 1 |" in card
        and "| Each history item in the prompt | `{title}, {description}`, its item embedding and an output token |"
        in card
    )
    entries = [entry for entry in run.log_history if "loss" in entry]
    assert len(entries) == 8
    for entry in entries:
        total = entry["ranking_loss"] + 0.5 * entry["distillation_loss"] + 0.1 * entry["uniformity_loss"]
        assert total == pytest.approx(entry["loss"], abs=1e-4)
    assert np.mean([e["ranking_loss"] for e in entries[-4:]]) < np.mean([e["ranking_loss"] for e in entries[:4]])


def test_ranking_head_from_stage1_latents(stage1_run, tiny_dataset, lm_dir, tmp_path):
    command = ranking_command(
        tiny_dataset, lm_dir("llama"), tmp_path / "run", ["--stage1_model_path", stage1_run.output_dir],
        "--item_head_input", "joint", "--num_train_epochs", "1",
    )  # fmt: skip
    run = run_example("train_ranking_head", command)
    loaded = ALLMRecForItemRanking.from_pretrained(run.output_dir)
    assert loaded.config.item_head_input == "joint"
    assert loaded.config.item_projector_input == "latent"
    assert 0 <= run.results["test_ndcg@10"] <= 1


@pytest.mark.parametrize("weight", ["auto", "0.5"])
def test_ranking_head_adds_the_cf_score_at_a_validation_chosen_weight(weight, cf_run, tiny_dataset, lm_dir, tmp_path):
    command = ranking_command(
        tiny_dataset, lm_dir("llama"), tmp_path / "run", ["--cf_model_path", cf_run.output_dir],
        "--num_train_epochs", "2", "--cf_score_weight", weight,
    )  # fmt: skip
    run = run_example("train_ranking_head", command)
    results = run.results
    loaded = ALLMRecForItemRanking.from_pretrained(run.output_dir).eval()
    assert loaded.config.cf_score_weight == results["cf_score_weight"]
    if weight == "auto":
        search = results["cf_score_weight_search"]
        table = search["table"]
        assert table[0]["relative_weight"] == 0 and search["metric"] == "ndcg@10"
        best = max(table, key=lambda row: row["ndcg@10"])  # max() keeps the first (smallest weight) of equals
        assert search["weight"] == best["weight"] == results["cf_score_weight"]
        assert results["eval_ndcg@10"] == pytest.approx(best["ndcg@10"])  # validation figures at the chosen weight
        assert all(row["weight"] == pytest.approx(row["relative_weight"] * search["scale"]) for row in table)
    else:
        assert results["cf_score_weight"] == 0.5 and "cf_score_weight_search" not in results
        card = open(os.path.join(run.output_dir, "README.md"), encoding="utf-8").read()
        assert "plus 0.5 times SASRec's own score of the item" in card and "x the CF score |" in card
    # The test figures are the saved model's: its scores (the CF term included) on the test candidates.
    processor = ALLMRecProcessor.from_pretrained(run.output_dir)
    split = PreparedDataset.load(tiny_dataset).splits["test"]
    batch = processor.ranking_inputs([list(h) for h in split["history"]])
    candidates = torch.tensor(split["candidates"])
    positions = (candidates == torch.tensor(split["target"])[:, None]).float().argmax(1).numpy()
    for prefix, override in (("test", None), ("test_head_only", 0.0)):
        if prefix == "test_head_only" and not results["cf_score_weight"]:
            assert "test_head_only_hit@1" not in results  # no sum: the pure head is the only row
            continue
        scores = loaded.score_candidates(**batch, candidate_ids=candidates, cf_score_weight=override).numpy()
        expected = ranking_metrics(target_ranks(scores, positions), (1, 5, 10))
        assert results[f"{prefix}_hit@1"] == pytest.approx(expected["hit@1"])
        assert results[f"{prefix}_ndcg@10"] == pytest.approx(expected["ndcg@10"])


# ========================================================================================== bad input
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--item_head_input", "joint"], "needs --stage1_model_path"),
        (["--lm_dtype", "bfloat17"], "is not a torch dtype"),
        (["--cf_score_weight", "-1"], "--cf_score_weight must be 'auto' or a finite number >= 0, got '-1'"),
        (["--cf_score_weight", "high"], "--cf_score_weight must be 'auto' or a finite number >= 0, got 'high'"),
        (["--lm_num_layers", "0"], "--lm_num_layers must be a positive number of decoder layers, got 0"),
        (["--lm_num_layers", "3"], "lm_num_layers is 3 but .* has only 2 decoder layers"),
        (["--no_history_embeddings", "true"], "without --history_titles would show nothing of the history"),
        (["--ranking_item_text", "{title}, {year}"], "names none without --history_titles"),
        (["--history_titles", "true", "--ranking_item_text", "{title}, {genres}"], r"names the field \{genres\}"),
    ],
)
def test_ranking_script_refuses_bad_arguments(extra, message, cf_run, tiny_dataset, lm_dir, tmp_path):
    output = tmp_path / "run"
    command = ranking_command(tiny_dataset, lm_dir("llama"), output, ["--cf_model_path", cf_run.output_dir], *extra)
    with pytest.raises(ValueError, match=message):
        run_example("train_ranking_head", command)
    assert not output.exists()


def test_ranking_trainer_needs_the_processor(ranking_run):
    with pytest.raises(ValueError, match="needs the processor"):
        RankingTrainer(model=ranking_run.trainer.model, args=ranking_run.trainer.args)


def test_ranking_head_card_describes_the_head_and_its_code_runs(ranking_run):
    from huggingface_hub import ModelCard

    folder = ranking_run.output_dir
    card = ModelCard.load(os.path.join(folder, "README.md"))
    text, results = card.text, ranking_run.results
    assert "\n# A-LLMRec ranking head: lm_llama + SASRec on tiny\n" in text
    assert "ranking-head" in card.data.tags and "next-item-recommendation" in card.data.tags
    assert "examples/train_ranking_head.py" in text and "| Ranking heads | user:" in text
    assert "| History items in the prompt (each an output token) | 5 |" in text
    assert "| Each history item in the prompt | its item embedding and an output token |" in text  # no titles
    assert "each as its item embedding and an output token\n(the output token carries" in text
    assert f"| Test | {results['test_hit@1']:.4f} |" in text  # the run's own validation and test figures
    entries = {(e.dataset_split, e.metric_type, e.metric_args.get("k")): e.metric_value for e in card.data.eval_results}
    assert entries[("test", "hit_rate", 1)] == pytest.approx(results["test_hit@1"], abs=1e-4)
    assert "Generated answers" not in text  # the head generates nothing
    assert "--ranking_model_path <this folder> --update_model_card true" in text  # how to evaluate it
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2 and "trust_remote_code=True" in blocks[-1]
    code = re.sub(r"^checkpoint = .*$", f"checkpoint = {folder!r}", blocks[0], flags=re.M)
    namespace: dict = {}
    exec(compile(code, "<model card of the ranking head>", "exec"), namespace)
    assert type(namespace["model"]).__name__ == "ALLMRecForItemRanking"
    assert namespace["scores"].shape == (NUM_ITEMS + 1,)


# ========================================================================================== evaluation
def test_evaluate_scores_the_ranking_head_beside_sasrec_and_popularity(ranking_run, cf_run, tiny_dataset, tmp_path):
    from allmrec_hf.evaluation.evaluator import training_item_counts
    from training_helpers import example_module

    results = example_module("evaluate").main([
        "--dataset_dir", tiny_dataset, "--output_dir", str(tmp_path), "--ranking_model_path", ranking_run.output_dir,
        "--cf_model_path", cf_run.output_dir, "--batch_size", "5", "--disable_tqdm", "true", "--plots", "false",
    ])  # fmt: skip
    head = "A-LLMRec ranking head"
    assert list(results["methods"]) == ["SASRec", "Popularity", head]
    assert results["methods"][head]["kind"] == "ranking"
    for scenario in results["scenarios"]:
        assert set(results["results"][scenario][head]) == {"ranking"}  # every scenario, ranking mode only
    test = results["results"]["test"]
    # The same model on the same persisted candidates as the training script's own test evaluation.
    assert test[head]["ranking"]["hit@1"] == pytest.approx(ranking_run.results["test_hit@1"])
    assert test[head]["ranking"]["ndcg@5"] == pytest.approx(ranking_run.results["test_ndcg@5"])
    assert test["SASRec"]["ranking"]["hit@1"] == pytest.approx(cf_run.results["test_hit@1"])

    data = PreparedDataset.load(tiny_dataset)
    split = data.scenario("test")
    counts = training_item_counts(data)
    assert counts.sum() == sum(len(h) + 1 for h in data.splits["train"]["history"])
    candidates = np.asarray(split["candidates"])
    positions = (candidates == np.asarray(split["target"])[:, None]).argmax(1)
    expected = ranking_metrics(target_ranks(counts[candidates], positions), (1, 5))
    assert {k: test["Popularity"]["ranking"][k] for k in expected} == pytest.approx(expected)

    # Full catalog: the head's own scores over every unseen item (no CF pre-retrieval).
    model = ALLMRecForItemRanking.from_pretrained(ranking_run.output_dir).eval()
    processor = ALLMRecProcessor.from_pretrained(ranking_run.output_dir)
    scores = model.score_candidates(**processor.ranking_inputs([list(h) for h in split["history"]]))
    ranks = []
    for row, history in enumerate(split["history"]):
        row_scores = scores[row].clone()
        row_scores[list(history)] = float("-inf")
        ranks.append(int((row_scores > row_scores[split["target"][row]]).sum()))
    full = results["full_catalog"]["results"][head]
    assert full["hit@1"] == pytest.approx(float(np.mean(np.array(ranks) < 1)))
    assert full["hit@5"] == pytest.approx(float(np.mean(np.array(ranks) < 5)))
    report = (tmp_path / "results.md").read_text()
    assert "| A-LLMRec ranking head |" in report
    assert "SASRec, Popularity, A-LLMRec ranking head rank every unseen item" in report  # no CF retrieval


def test_evaluate_reports_a_head_with_the_cf_score_beside_the_pure_head(ranking_run, cf_run, tiny_dataset, tmp_path):
    from training_helpers import example_module

    fused_dir = tmp_path / "fused"
    shutil.copytree(ranking_run.output_dir, fused_dir, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((fused_dir / "config.json").read_text())
    (fused_dir / "config.json").write_text(json.dumps({**config, "cf_score_weight": 0.5}))
    cf_folder = tmp_path / "cf"
    shutil.copytree(cf_run.output_dir, cf_folder)  # its card is updated too: not the shared fixture's
    results = example_module("evaluate").main([
        "--dataset_dir", tiny_dataset, "--output_dir", str(tmp_path / "eval"), "--ranking_model_path", str(fused_dir),
        "--cf_model_path", str(cf_folder), "--batch_size", "5", "--disable_tqdm", "true", "--plots", "false",
        "--update_model_card", "true",
    ])  # fmt: skip
    fused, pure = "A-LLMRec ranking head + SASRec score", "A-LLMRec ranking head (no SASRec term)"
    assert list(results["methods"]) == ["SASRec", "Popularity", fused, pure]
    assert results["methods"][fused]["cf_score_weight"] == 0.5 and results["methods"][pure]["cf_score_weight"] == 0
    test = results["results"]["test"]
    assert test[pure]["ranking"]["hit@1"] == pytest.approx(ranking_run.results["test_hit@1"])  # the head alone
    model = ALLMRecForItemRanking.from_pretrained(fused_dir).eval()
    processor = ALLMRecProcessor.from_pretrained(fused_dir)
    split = PreparedDataset.load(tiny_dataset).scenario("test")
    candidates = torch.tensor(split["candidates"])
    batch = processor.ranking_inputs([list(h) for h in split["history"]])
    scores = model.score_candidates(**batch, candidate_ids=candidates).numpy()
    positions = (candidates == torch.tensor(split["target"])[:, None]).float().argmax(1).numpy()
    expected = ranking_metrics(target_ranks(scores, positions), (1, 5, 10))
    assert test[fused]["ranking"]["hit@1"] == pytest.approx(expected["hit@1"])
    assert test[fused]["ranking"]["ndcg@5"] == pytest.approx(expected["ndcg@5"])
    assert set(results["full_catalog"]["results"]) >= {fused, pure}
    assert f"| {fused} |" in (tmp_path / "eval" / "results.md").read_text()
    card = (fused_dir / "README.md").read_text()
    assert f"| **{fused}** (this model) |" in card and f"| {pure} |" in card  # the pure head is not what it ships


def test_evaluate_writes_the_head_s_card_without_generation_columns(ranking_run, cf_run, tiny_dataset, tmp_path):
    """`--update_model_card` on a head: its evaluation section shows ranking figures only (the head generates
    nothing) and says the head ranks the whole catalog itself; the model-index holds the evaluation's figures."""
    from training_helpers import example_module

    folder, cf_folder = tmp_path / "head", tmp_path / "cf"
    shutil.copytree(ranking_run.output_dir, folder)
    shutil.copytree(cf_run.output_dir, cf_folder)  # its card is updated too: not the shared fixture's
    results = example_module("evaluate").main([
        "--dataset_dir", tiny_dataset, "--output_dir", str(tmp_path / "eval"), "--ranking_model_path", str(folder),
        "--cf_model_path", str(cf_folder), "--batch_size", "5", "--disable_tqdm", "true", "--plots", "false",
        "--update_model_card", "true",
    ])  # fmt: skip
    card = ModelCard.load(folder / "README.md")
    section = card.text.split("## Evaluation", 1)[1]
    head = results["results"]["test"]["A-LLMRec ranking head"]["ranking"]
    assert f"| **A-LLMRec ranking head** (this model) | {head['hit@1']:.4f} |" in section
    assert "generation" not in section.lower() and "log-likelihood" not in section
    assert "SASRec, Popularity, A-LLMRec ranking head rank every item the user has\nnot interacted with" in section
    assert "rerank" not in section
    test_entries = [e for e in card.data.eval_results if e.dataset_split == "test"]
    ranking = {(e.metric_type, e.metric_args.get("k")): e for e in test_entries if e.metric_args["mode"] == "ranking"}
    assert ranking[("hit_rate", 1)].metric_value == pytest.approx(head["hit@1"], abs=1e-4)
    full = [e for e in test_entries if e.metric_args["mode"] != "ranking"]
    assert full and {e.metric_args["mode"] for e in full} == {"full-catalog ranking"}
    assert not any("retrieved_by_cf" in e.metric_args for e in full)  # the head ranks every item itself
    assert {e.metric_args["scoring"] for e in test_entries} == {SCORING["ranking"]}


def test_evaluate_refuses_a_head_given_as_the_other_kind(ranking_run, stage2_runs, tiny_dataset, tmp_path):
    from training_helpers import example_module

    main = example_module("evaluate").main
    common = ["--dataset_dir", tiny_dataset, "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="give a ranking head with --ranking_model_path"):
        main([*common, "--allmrec_model_path", ranking_run.output_dir])
    with pytest.raises(ValueError, match="not a ranking head"):
        main([*common, "--ranking_model_path", stage2_runs["a-llmrec"].output_dir])
    assert not (tmp_path / "out").exists()


# ========================================================================================== 2 processes
def test_two_cpu_processes_match_one_with_gradient_accumulation(cf_run, tiny_dataset, lm_dir, tmp_path):
    """DDP over 2 gloo processes with 2 rows each per step == 1 process with 2 rows x 2 accumulation steps: the
    same seeded row order, the same loss average, the same trained heads; and the validation figures every process
    computes are the single process's."""
    from safetensors.torch import load_file

    from allmrec_hf.training.trainers import TRAINABLE_WEIGHTS_NAME
    from training_helpers import run_two_processes

    def command(output, *extra):
        args = ranking_command(tiny_dataset, lm_dir("llama"), output, ["--cf_model_path", cf_run.output_dir])
        args[args.index("--per_device_train_batch_size") + 1] = "2"
        args[args.index("--num_train_epochs") + 1] = "2"  # 16 rows, 4 a step: 8 steps, evaluated after 4 and 8
        return [*args, "--lr_scheduler_type", "linear", *extra]

    single = run_example("train_ranking_head", command(tmp_path / "single", "--gradient_accumulation_steps", "2"))
    assert single.trainer.state.global_step == 8
    run_two_processes(command(tmp_path / "ddp"), script="examples/train_ranking_head.py")
    got = load_file(tmp_path / "ddp" / "model.safetensors")
    expected = {name: value for name, value in single.trainer.model.state_dict().items() if name in got}
    trained = {name for name, p in single.trainer.model.named_parameters() if p.requires_grad}
    assert trained and trained <= set(expected)
    for name in trained:
        torch.testing.assert_close(got[name].float(), expected[name].float(), rtol=1e-4, atol=1e-5)

    state = json.loads((tmp_path / "ddp" / "checkpoint-8" / "trainer_state.json").read_text())
    losses = {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}
    assert losses == pytest.approx(single.losses(), rel=1e-4)
    evals = [entry["eval_ndcg@10"] for entry in state["log_history"] if "eval_ndcg@10" in entry]
    # (the single run's history also holds the script's last evaluation, of the best epoch reloaded)
    single_evals = [entry["eval_ndcg@10"] for entry in single.log_history if "eval_ndcg@10" in entry][:2]
    assert len(evals) == 2 and evals == pytest.approx(single_evals, abs=1e-6)
    assert set(load_file(tmp_path / "ddp" / "checkpoint-8" / TRAINABLE_WEIGHTS_NAME)) == set(trained)
    results = json.loads((tmp_path / "ddp" / "all_results.json").read_text())
    assert results["test_hit@1"] == pytest.approx(single.results["test_hit@1"])
