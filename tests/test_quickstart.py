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
    assert {"cf", "stage1", "a-llmrec", "mlp-llm", "llm-only", "evaluation", "timings.json"} <= set(os.listdir(output))
    for stage in ("cf", "stage1", "a-llmrec", "mlp-llm", "llm-only"):
        assert os.path.isfile(output / stage / "all_results.json"), stage
    for name in ("processor_config.json", "item_catalog.jsonl", "model.safetensors", "config.json"):
        assert os.path.isfile(output / "a-llmrec" / name), name
    assert {"results.json", "results.md", "hit_at_k.png", "scenarios.png"} <= set(os.listdir(output / "evaluation"))
    assert list(results["methods"]) == ["SASRec", "Popularity", "LLM-only", "MLP-LLM", "A-LLMRec"]
    assert results["scenarios"]["test"] == {"num_users": 4, "num_generation_users": 2}
    timings = json.loads((output / "timings.json").read_text())
    assert {"pretrain_cf", "train_stage1", "train_stage2", "evaluate", "total"} <= set(timings)


def test_summary_table_has_every_method(quickstart):
    _, _, results = quickstart
    table = example_module("quickstart").summary_table(results)
    assert "| Method | Hit@1 (generation) | Hit@1 | Hit@5 | NDCG@5 | NDCG@10 | MRR |" in table
    for method in ("SASRec", "LLM-only", "MLP-LLM", "A-LLMRec"):
        assert f"| {method} |" in table
    assert table.splitlines()[4].startswith("| SASRec | – |")  # the CF model has no generation mode


def test_running_it_again_skips_what_is_done(quickstart):
    output, argv, results = quickstart
    stamps = {p: os.path.getmtime(output / p / "model.safetensors") for p in ("cf", "stage1", "a-llmrec")}
    again = example_module("quickstart").main(argv)
    assert again["results"] == json.loads(json.dumps(results["results"]))
    assert stamps == {p: os.path.getmtime(output / p / "model.safetensors") for p in stamps}
    timings = json.loads((output / "timings.json").read_text())
    assert "evaluate" not in timings  # up to date: not run again
