"""Smoke tests of the benchmark scripts on tiny models (their figures are not checked, only that they are sane)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys

from training_helpers import REPO

BENCHMARKS = REPO / "benchmarks"


def benchmark_module(name: str):
    """`benchmarks/<name>.py` imported as a module."""
    spec = importlib.util.spec_from_file_location(f"allmrec_benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_ranking_vs_generation_runs_every_mode_on_the_same_users(stage2_runs, tiny_dataset, lm_dir, tmp_path, capsys):
    bench = benchmark_module("ranking_vs_generation")
    output = tmp_path / "result.json"
    argv = ["--model_path", stage2_runs["a-llmrec"].output_dir, "--dataset_dir", tiny_dataset]
    argv += ["--llm", lm_dir("llama"), "--num_users", "4", "--batch_size", "3", "--seed", "1"]
    argv += ["--dtype", "float32", "--output_json", str(output), "--disable_tqdm"]
    results = bench.main(argv)

    saved = json.loads(output.read_text())
    assert set(saved) >= {
        "config",
        "users",
        "warmup_user",
        "num_candidates",
        "modes",
        "score_agreement",
        "speedup_vs_generation",
        "target",
    }
    assert len(saved["users"]) == 4 and saved["warmup_user"] not in saved["users"]
    again = bench.main([*argv, "--skip_naive_batches", "--threads", "1"])
    assert again["users"] == saved["users"]  # the users are a seeded sample
    assert again["modes"][bench.NAIVE]["users_per_s_measured_in"] == "one at a time"
    assert saved["modes"][bench.NAIVE]["users_per_s_measured_in"] == "batches of 3"
    assert set(saved["modes"]) == set(bench.MODES)
    for mode, entry in saved["modes"].items():
        assert entry["users"] == 4, mode  # every mode ran on every user, one at a time and in batches
        assert entry["users_per_s"] > 0 and entry["users_per_s_one_at_a_time"] > 0
        lat = entry["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    for mode in bench.RANKING_MODES:
        metrics = saved["modes"][mode]["metrics"]
        assert set(metrics) == {"hit@1", "hit@5", "ndcg@10", "mrr"}
        assert 0 <= metrics["hit@1"] <= metrics["hit@5"] <= 1
    generation = saved["modes"][bench.GENERATION]
    assert len(generation["answers"]) == 4
    assert {"hit@1_substring", "hit@1_strict", "valid_answer_rate"} <= set(generation["metrics"])
    assert 1 <= generation["metrics"]["mean_new_tokens"] <= saved["config"]["max_new_tokens"]

    # The naive scorer (a full forward per candidate) and the prefix-cache scorers agree (float32 here).
    agreement = saved["score_agreement"]
    assert agreement["naive_vs_cached_all_max_abs_diff"] < 1e-3
    assert agreement["naive_vs_cached_one_max_abs_diff"] < 1e-3
    assert agreement["batched_vs_single_cached_all_max_abs_diff"] < 1e-3
    assert agreement["naive_vs_cached_all_same_top1"] == 1.0
    # Equal scores, equal quality.
    assert len({json.dumps(saved["modes"][m]["metrics"]) for m in bench.RANKING_MODES}) == 1

    target = saved["target"]
    assert target["best_ranking_mode"] in bench.RANKING_MODES
    assert target["met"] == (target["faster"] and target["as_good"])
    assert all(math.isfinite(r["throughput"]) for r in saved["speedup_vs_generation"].values())
    assert results["target"] == target
    printed = capsys.readouterr().out
    assert "| generation |" in printed and "target: ranking >= 5x faster" in printed


def test_cf_backbones_compares_each_backbone_with_allmrec_on_the_same_users(
    tiny_dataset, text_encoder_dir, lm_dir, tmp_path, capsys
):
    bench = benchmark_module("cf_backbones")
    argv = ["--size", "smoke", "--output_dir", str(tmp_path), "--dataset_dir", tiny_dataset, "--llm", lm_dir("llama")]
    argv += ["--text_encoder", text_encoder_dir, "--disable_tqdm", "true"]
    summary = bench.main(argv)

    saved = json.loads((tmp_path / "cf_backbones.json").read_text())
    assert saved == summary and list(saved["backbones"]) == ["sasrec", "gru4rec", "nextitnet"]
    assert saved["command"].startswith("python benchmarks/cf_backbones.py --size smoke")
    assert saved["users"]["num_users"] == 4 and len(saved["users"]["rows_sha256"]) == 64
    for backbone, entry in saved["backbones"].items():
        assert entry["name"] == {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "nextitnet": "NextItNet"}[backbone]
        assert json.loads((tmp_path / backbone / "cf" / "config.json").read_text())["model_type"] == backbone
        results = json.loads((tmp_path / backbone / "evaluation" / "results.json").read_text())
        assert list(results["methods"]) == [entry["name"], "Popularity", "A-LLMRec"]
        assert results["scenarios"]["test"]["num_users"] == 4
        assert 0 <= entry["cf"]["hit@1"] <= entry["cf"]["hit@5"] <= 1
        assert (
            0 <= entry["a-llmrec"]["ranking"]["hit@1"] <= 1
            and 0 <= entry["a-llmrec"]["generation"]["hit@1_substring"] <= 1
        )
        gain = entry["a-llmrec"]["ranking"]["hit@1"] - entry["cf"]["hit@1"]
        assert math.isclose(entry["hit@1_gain_ranking"], gain)
    table = (tmp_path / "cf_backbones.md").read_text()
    assert "| Backbone | alone: Hit@1 |" in table and saved["command"] in table
    for name in ("SASRec", "GRU4Rec", "NextItNet"):
        assert f"| {name} | " in table
    assert "| GRU4Rec | " in capsys.readouterr().out

    again = bench.main(argv)  # every stage and evaluation is found finished
    assert again["backbones"] == summary["backbones"]
    assert all(seconds < 1 for stages in again["timing_seconds"].values() for seconds in stages.values())


def test_ranking_vs_generation_times_the_ranking_head_on_the_same_users(
    stage2_runs, cf_run, tiny_dataset, lm_dir, tmp_path
):
    """`--ranking_model_path`: the head's two modes run on the same users as the others, its candidate scores are
    the model's own `rank_candidates`, and its speed-up against generation is reported against the 20x target."""
    from allmrec_hf import ALLMRecForItemRanking, ALLMRecProcessor
    from allmrec_hf.data import PreparedDataset
    from training_helpers import run_example

    head = tmp_path / "head"
    run_example("train_ranking_head", [
        "--dataset_dir", tiny_dataset, "--cf_model_path", cf_run.output_dir, "--llm", lm_dir("llama"),
        "--output_dir", str(head), "--ranking_history_length", "5", "--ranking_hidden_size", "16",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--bf16", "false",
    ])  # fmt: skip
    bench = benchmark_module("ranking_vs_generation")
    argv = ["--model_path", stage2_runs["a-llmrec"].output_dir, "--dataset_dir", tiny_dataset]
    argv += ["--llm", lm_dir("llama"), "--num_users", "4", "--batch_size", "3", "--seed", "1"]
    argv += ["--dtype", "float32", "--disable_tqdm", "--ranking_model_path", str(head)]
    results = bench.main(argv)
    assert set(results["modes"]) == set(bench.MODES) | set(bench.HEAD_MODES)
    for mode in bench.HEAD_MODES:
        entry = results["modes"][mode]
        assert entry["users"] == 4 and entry["users_per_s"] > 0 and entry["latency_ms"]["p50"] > 0
    metrics = results["modes"][bench.HEAD]["metrics"]
    assert results["modes"][bench.HEAD]["metrics_batched"] == metrics  # batches rank as one user at a time does

    model = ALLMRecForItemRanking.from_pretrained(head, base_model_name_or_path=lm_dir("llama")).eval()
    processor = ALLMRecProcessor.from_pretrained(head)
    data = bench.select_users(PreparedDataset.load(tiny_dataset), "test", 4, 1)[1:]  # the benchmark's users
    ranked = model.rank_candidates(processor, [r["history"] for r in data], [r["candidates"] for r in data])
    hits = [entries[0]["item"] == r["target"] for entries, r in zip(ranked, data, strict=True)]
    assert metrics["hit@1"] == sum(hits) / 4
    target = results["head_target"]
    assert target["required_speedup"] == 20 and target["met"] == (target["faster"] and target["as_good"])
    assert math.isfinite(target["speedup"]) and math.isfinite(target["speedup_whole_catalog"])


def test_batch_recommend_times_the_loop_and_the_batch_job(ranking_run, tiny_dataset, tmp_path):
    bench = benchmark_module("batch_recommend")
    output = tmp_path / "result.json"
    argv = ["--model_path", ranking_run.output_dir, "--dataset_dir", tiny_dataset, "--num_users", "6", "--k", "3"]
    argv += ["--batch_size", "4", "--lm_dtype", "float32", "--output_json", str(output)]
    result = bench.main(argv)
    assert json.loads(output.read_text()) == result
    assert list(result["modes"]) == ["recommend() user by user", "recommend.py, 1 process", "recommend.py, 2 processes"]
    assert all(m["users_per_second"] > 0 and math.isfinite(m["vs_loop"]) for m in result["modes"].values())
    assert result["modes"]["recommend.py, 2 processes"]["users"] == 6
    assert set(result["share_of_users_with_the_loops_items"].values()) == {1.0}  # float32: the same items
    # examples/ must not stay on sys.path: its evaluate.py would shadow the `evaluate` package for later tests
    assert os.path.dirname(bench.SCRIPT) not in sys.path


def test_gpu_check_runs_at_toy_size_on_the_cpu(tmp_path):
    bench = benchmark_module("gpu_check")
    result = bench.main(["--smoke", "--output_json", str(tmp_path / "gpu.json")])
    assert json.loads((tmp_path / "gpu.json").read_text()) == result
    for name in ("ranking-head training", "stage-2 training"):
        assert result[name]["samples_per_s"] > 0 and result[name]["flop_per_step"] > 0 and result[name]["finite_loss"]
    assert result["ranking head, whole catalog"]["users_per_s"] > 0 and result["generation"]["users_per_s"] > 0
    assert result["two_gpu"] == "skipped: only one GPU"


def test_lm_dtype_speed_times_both_dtypes_at_toy_size(tmp_path):
    bench = benchmark_module("lm_dtype_speed")
    argv = ["--tiny", "--batch_size", "2", "--tokens", "8", "--steps", "1", "--output_json", str(tmp_path / "d.json")]
    result = bench.main(argv)
    assert json.loads((tmp_path / "d.json").read_text()) == result
    assert set(result["seconds_per_step"]) == {"float32", "bfloat16"}
    assert all(s > 0 for s in result["seconds_per_step"].values()) and result["bfloat16_over_float32"] > 0
    assert result["auto_picks"] == ("bfloat16" if result["native_bfloat16"] else "float32")
