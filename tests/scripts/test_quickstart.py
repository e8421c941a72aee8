"""`examples/quickstart.py` (the `--size smoke` variant) end to end on the tiny dataset and tiny models."""

from __future__ import annotations

import json
import os

import pytest

from training_helpers import example_module


@pytest.fixture(scope="module")
def quickstart(tiny_dataset, text_encoder_dir, lm_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("quickstart")
    argv = ["--size", "smoke", "--output_dir", str(output), "--dataset_dir", tiny_dataset]
    argv += ["--llm", lm_dir("llama"), "--text_encoder", text_encoder_dir, "--disable_tqdm", "true"]
    results = example_module("quickstart").main(argv)
    return output, argv, results


def test_quickstart_trains_every_stage_and_evaluates(quickstart, capsys):
    output, _, results = quickstart
    folders = {"cf", "ranking-head", "stage1", "a-llmrec", "mlp-llm", "llm-only", "evaluation"}
    assert folders | {"evaluation-ranking-head", "timings.json"} <= set(os.listdir(output))
    for stage in ("cf", "ranking-head", "stage1", "a-llmrec", "mlp-llm", "llm-only"):
        assert os.path.isfile(output / stage / "all_results.json"), stage
    for folder in ("a-llmrec", "ranking-head"):
        for name in ("processor_config.json", "item_catalog.jsonl", "model.safetensors", "config.json"):
            assert os.path.isfile(output / folder / name), (folder, name)
    for folder in ("evaluation", "evaluation-ranking-head"):
        assert {"results.json", "results.md", "hit_at_k.png", "scenarios.png"} <= set(os.listdir(output / folder))
    paper, head = results["paper"], results["ranking_head"]
    assert list(paper["methods"]) == ["SASRec", "Popularity", "LLM-only", "MLP-LLM", "A-LLMRec"]
    assert paper["scenarios"]["test"] == {"num_users": 4, "num_generation_users": 2}
    assert list(head["methods"]) == ["SASRec", "Popularity", "A-LLMRec ranking head"]
    assert head["scenarios"]["test"]["num_users"] == 4
    assert head["arguments"]["ranking_model_path"] == str(output / "ranking-head")
    timings = json.loads((output / "timings.json").read_text())
    assert {"pretrain_cf", "train_ranking_head", "train_stage1", "train_stage2", "evaluate", "total"} <= set(timings)
    assert "evaluate_ranking_head" in timings


def test_summary_table_has_every_method(quickstart):
    _, _, results = quickstart
    table = example_module("quickstart").summary_table(results["paper"])
    assert "| Method | Hit@1 (generation) | Hit@1 | Hit@5 | NDCG@5 | NDCG@10 | MRR |" in table
    for method in ("SASRec", "LLM-only", "MLP-LLM", "A-LLMRec"):
        assert f"| {method} |" in table
    assert table.splitlines()[4].startswith("| SASRec | – |")  # the CF model has no generation mode
    head = example_module("quickstart").ranking_head_table(results["ranking_head"])
    assert "| Method | Hit@1 | Hit@5 | NDCG@5 | NDCG@10 | MRR |" in head
    hit = results["ranking_head"]["results"]["test"]["A-LLMRec ranking head"]["ranking"]["hit@1"]
    assert f"| A-LLMRec ranking head | {hit:.4f} |" in head


def test_cpu_size_puts_the_head_on_every_test_user():
    """The CPU size: the head, SASRec and popularity on every test user; the paper's slow models on a sample."""
    quickstart = example_module("quickstart")
    commands = quickstart.stage_commands(quickstart.QuickstartArguments())
    assert "--max_users" not in commands["evaluate_ranking_head"]
    assert "--max_users" in commands["evaluate"]
    head = commands["train_ranking_head"]
    assert head[head.index("--ranking_history_length") + 1] == "50" and "--max_train_samples" not in head
    assert head[head.index("--lm_num_layers") + 1] == "10" and "--history_titles" not in head  # the README's prompt
    assert ("train_stage2_mlp_llm" in commands) == quickstart.MLP_LLM_AT_CPU_SIZE
    paper = quickstart.stage_commands(quickstart.QuickstartArguments(size="paper"))
    head = paper["train_ranking_head"]
    assert head[head.index("--cut_points") + 1] == "2" and "--eval_strategy" not in head  # the script's defaults
    smoke = quickstart.stage_commands(quickstart.QuickstartArguments(size="smoke"))["train_ranking_head"]
    assert "--lm_num_layers" not in smoke  # the tiny test LMs have fewer than 10 layers


def test_running_it_again_skips_what_is_done(quickstart, capsys):
    output, argv, results = quickstart
    stamps = {p: os.path.getmtime(output / p / "model.safetensors") for p in ("cf", "stage1", "a-llmrec")}
    stamps["ranking-head"] = os.path.getmtime(output / "ranking-head" / "model.safetensors")
    again = example_module("quickstart").main(argv)
    for name in ("paper", "ranking_head"):
        assert again[name]["results"] == json.loads(json.dumps(results[name]["results"]))
    assert stamps == {p: os.path.getmtime(output / p / "model.safetensors") for p in stamps}
    timings = json.loads((output / "timings.json").read_text())
    assert "evaluate" not in timings and "evaluate_ranking_head" not in timings  # up to date: not run again
    printed = capsys.readouterr().out
    assert "The ranking head, SASRec and the popularity ranking. Every test user (4)" in printed
    assert printed.index("| A-LLMRec ranking head |") < printed.index("| A-LLMRec |")  # the headline comes first
