"""The three training scripts end to end on tiny data (run through `main()` with a patched `sys.argv`): the loss
goes down, frozen parts stay bit-identical while trainable ones change, the outputs load back and give the same
results, the baselines and LoRA, and bad input refused at start-up."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from allmrec_hf import (
    ALLMRecAlignerModel,
    ALLMRecConfig,
    ALLMRecForConditionalGeneration,
    ALLMRecProcessor,
    ItemCatalog,
    SASRecModel,
)
from allmrec_hf.data import PreparedDataset
from allmrec_hf.training.builders import CheckpointMismatchError
from allmrec_hf.training.collators import Stage1Collator, left_pad
from allmrec_hf.training.trainers import TRAINABLE_WEIGHTS_NAME
from training_helpers import InterruptAt, Interrupted, run_example, write_dataset

STAGE2_ARGS = ["--num_candidates", "3", "--prompt_history_length", "5", "--max_train_samples", "4"]
STAGE2_ARGS += ["--per_device_train_batch_size", "4", "--learning_rate", "3e-2", "--save_strategy", "no"]
STAGE2_ARGS += ["--logging_steps", "1"]


def assert_decreases(losses: list[float], factor: float):
    """The mean of the last 3 losses is below `factor` times the mean of the first 3."""
    first, last = float(np.mean(losses[:3])), float(np.mean(losses[-3:]))
    print(f"loss {first:.4f} -> {last:.4f} (ratio {last / first:.3f}, required < {factor})")
    assert last < factor * first, f"loss went from {first:.4f} to {last:.4f}: {losses}"


def assert_same_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]):
    assert sorted(got) == sorted(expected)
    different = [name for name in expected if not torch.equal(got[name], expected[name])]
    assert not different, f"changed: {different}"


def validation_batch(processor: ALLMRecProcessor, dataset_dir: str, rows: int = 4):
    split = PreparedDataset.load(dataset_dir).splits["validation"].select(range(rows))
    batch = processor(histories=split["history"], candidates=split["candidates"], targets=split["target"])
    return {k: batch[k] for k in ("input_ids", "attention_mask", "cf_input_ids", "item_ids", "labels")}


# ================================================================================================= CF
def test_cf_pretraining_learns_and_keeps_the_best_epoch(cf_run):
    losses = [entry["loss"] for entry in cf_run.log_history if "loss" in entry]
    assert len(losses) == 20  # logged once per epoch
    assert_decreases(losses, 0.7)

    trainer, results = cf_run.trainer, cf_run.results
    evaluations = [entry["eval_ndcg@10"] for entry in cf_run.log_history if "eval_ndcg@10" in entry]
    assert len(evaluations) >= 20
    assert trainer.state.best_metric == max(evaluations[:20])
    assert evaluations[19] < trainer.state.best_metric  # the last epoch is not the best: the reload matters
    # load_best_model_at_end restored the best epoch's trainable weights: the final evaluation gives its score.
    assert results["eval_ndcg@10"] == trainer.state.best_metric
    for split in ("eval", "test"):
        assert 0 < results[f"{split}_ndcg@10"] <= results[f"{split}_hit@10"] <= 1
        assert results[f"{split}_hit@1"] <= results[f"{split}_hit@5"] <= results[f"{split}_hit@10"]

    checkpoints = sorted(glob.glob(os.path.join(cf_run.output_dir, "checkpoint-*")))
    assert 1 <= len(checkpoints) <= 2  # save_total_limit (the best one is kept)
    names = {name for name, _ in trainer.model.named_parameters()}
    for checkpoint in checkpoints:
        assert set(load_file(os.path.join(checkpoint, TRAINABLE_WEIGHTS_NAME))) == names
        assert not os.path.exists(os.path.join(checkpoint, "model.safetensors"))


def test_cf_evaluate_and_reload(cf_run, tiny_dataset):
    trainer = cf_run.trainer
    data = PreparedDataset.load(tiny_dataset)
    validation = data.splits["validation"]
    metrics = trainer.evaluate()
    assert {"eval_hit@10", "eval_ndcg@10", "eval_hit@1", "eval_mrr"} <= set(metrics)
    assert metrics["eval_ndcg@10"] == cf_run.results["eval_ndcg@10"]

    # The saved model gives the same scores, and the metrics follow from them.
    loaded = SASRecModel.from_pretrained(cf_run.output_dir).eval()
    histories = left_pad([list(h)[-20:] for h in validation["history"]])
    candidates = torch.tensor(validation["candidates"])
    with torch.no_grad():
        scores = loaded.score_items(histories, candidates)
        expected = trainer.model.eval().score_items(histories, candidates)
    assert torch.equal(scores, expected)
    targets = torch.tensor(validation["target"])
    target_scores = scores.gather(1, (candidates == targets[:, None]).float().argmax(1, keepdim=True))
    ranks = ((scores >= target_scores).sum(1) - 1).numpy()
    assert metrics["eval_hit@1"] == pytest.approx(float((ranks < 1).mean()))
    assert metrics["eval_ndcg@10"] == pytest.approx(float(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0).mean()))
    assert ItemCatalog.load(os.path.join(cf_run.output_dir, "item_catalog.jsonl")) == data.catalog


# ============================================================================================= stage 1
def test_stage1_loss_components_are_logged_separately(stage1_run):
    entries = [entry for entry in stage1_run.log_history if "loss" in entry]
    assert len(entries) == 15  # 30 steps, logged every 2
    components = ("matching_loss", "item_reconstruction_loss", "text_reconstruction_loss", "recommendation_loss")
    for entry in entries:
        assert all(isinstance(entry[name], float) for name in components)
        # Each is averaged over the same steps as the loss, and they add up to it (alpha = beta = 0.5).
        total = (
            entry["matching_loss"]
            + 0.5 * entry["item_reconstruction_loss"]
            + 0.5 * entry["text_reconstruction_loss"]
            + entry["recommendation_loss"]
        )
        assert total == pytest.approx(entry["loss"], abs=1e-5)
    assert_decreases([entry["loss"] for entry in entries], 0.75)
    assert_decreases([entry["recommendation_loss"] for entry in entries], 0.9)


def test_stage1_trains_the_aligner_and_keeps_the_cf_model(stage1_run, cf_run):
    model = stage1_run.trainer.model
    cf_reference = SASRecModel.from_pretrained(cf_run.output_dir)
    assert_same_tensors(dict(model.cf_model.state_dict()), dict(cf_reference.state_dict()))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name in stage1_run.initial if not name.startswith("cf_model.")}
    # Every trainable tensor moved, but the BERT pooler (unused: the sentence embedding is a mean pooling).
    unchanged = [
        name for name in trainable if torch.equal(dict(model.named_parameters())[name], stage1_run.initial[name])
    ]
    assert all(".pooler." in name for name in unchanged), unchanged


def test_stage1_output_loads_back(stage1_run, tiny_dataset, text_encoder_dir):
    output = stage1_run.output_dir
    loaded = ALLMRecAlignerModel.from_pretrained(output).eval()
    model = stage1_run.trainer.model.eval()
    assert_same_tensors(dict(loaded.state_dict()), dict(model.state_dict()))

    # The sentence encoder's tokenizer is saved beside it, for stage 2.
    saved = AutoTokenizer.from_pretrained(output)
    original = stage1_run.trainer.data_collator.processor.text_encoder_tokenizer
    text = ItemCatalog.load(os.path.join(output, "item_catalog.jsonl")).text(1)
    assert saved(text)["input_ids"] == original(text)["input_ids"]
    assert saved.get_vocab() == AutoTokenizer.from_pretrained(text_encoder_dir).get_vocab()  # no placeholders
    collator = stage1_run.trainer.data_collator
    rows = PreparedDataset.load(tiny_dataset).splits["train"].select(range(6))
    batch = collator([dict(row) for row in rows])
    with torch.no_grad():
        expected, got = model(**batch), loaded(**batch)
    for name in ("loss", "matching_loss", "recommendation_loss", "item_latents", "text_latents"):
        assert torch.equal(got[name], expected[name])
    assert isinstance(collator, Stage1Collator)
    results = json.loads(Path(output, "all_results.json").read_text())
    assert results["train_loss"] == pytest.approx(stage1_run.results["train_loss"])


def test_stage1_reports_how_far_apart_the_latents_lie(stage1_run, cf_run, tiny_dataset, text_encoder_dir, tmp_path):
    """The run's results and card give the joint latents' diversity over the catalog, and the normalised variant
    with a uniformity term keeps the items further apart than the paper's sigmoid on the same data."""
    from huggingface_hub import ModelCard

    from training_helpers import run_example

    results = stage1_run.results
    diversity = ALLMRecAlignerModel.from_pretrained(stage1_run.output_dir).latent_diversity()
    for name, value in diversity.items():
        assert results[f"latent_{name}"] == pytest.approx(value)
    card = ModelCard.load(Path(stage1_run.output_dir, "README.md")).text
    assert f"| Joint latents: mean pairwise cosine over the catalog | {diversity['mean_pairwise_cosine']:.4f} |" in card
    assert "| Latent encoders end in (paper: sigmoid) | sigmoid |" in card

    command = ["--dataset_dir", tiny_dataset, "--output_dir", str(tmp_path / "stage1"), "--cf_model_path"]
    command += [cf_run.output_dir, "--text_encoder", text_encoder_dir, "--latent_size", "16"]
    command += ["--item_text_max_length", "16", "--num_train_epochs", "15", "--per_device_train_batch_size", "8"]
    command += ["--learning_rate", "1e-3", "--save_strategy", "no"]  # the same as stage1_run's
    variant = run_example("train_stage1", [*command, "--latent_activation", "normalize", "--uniformity_weight", "1"])
    spread = variant.results
    assert spread["latent_mean_pairwise_cosine"] < results["latent_mean_pairwise_cosine"] - 0.1
    assert spread["latent_mean_dimension_std"] > 2 * results["latent_mean_dimension_std"]
    assert spread["latent_mean_norm"] == pytest.approx(1, abs=1e-4)
    assert any("uniformity_loss" in entry for entry in variant.log_history)
    assert ALLMRecAlignerModel.from_pretrained(tmp_path / "stage1").config.latent_activation == "normalize"


# ============================================================================================= stage 2
@pytest.fixture(scope="module", params=["llama", "qwen2"])
def stage2_run(request, stage1_run, tiny_dataset, lm_dir, training_root):
    family = request.param
    run = run_example(
        "train_stage2",
        ["--dataset_dir", tiny_dataset, "--stage1_model_path", stage1_run.output_dir, "--llm", lm_dir(family)]
        + ["--output_dir", str(training_root / f"stage2_{family}"), "--max_steps", "25", *STAGE2_ARGS],
    )
    run.family = family
    return run


def test_stage2_loss_decreases(stage2_run):
    losses = stage2_run.losses()
    assert sorted(losses) == list(range(1, 26))
    assert_decreases([losses[step] for step in sorted(losses)], 0.95)


def test_stage2_trains_the_projectors_only(stage2_run, stage1_run, lm_dir):
    model = stage2_run.trainer.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.split(".")[0] in ("user_projector", "item_projector") for name in trainable)
    assert len(trainable) == 12  # 2 projectors x (2 linear + layer norm) x (weight, bias)
    current = dict(model.named_parameters())
    assert all(not torch.equal(current[name], stage2_run.initial[name]) for name in trainable)

    lm_reference = AutoModelForCausalLM.from_pretrained(lm_dir(stage2_run.family))
    assert_same_tensors(dict(model.language_model.state_dict()), dict(lm_reference.state_dict()))
    aligner_reference = ALLMRecAlignerModel.from_pretrained(stage1_run.output_dir)
    assert_same_tensors(dict(model.recommender.state_dict()), dict(aligner_reference.state_dict()))


def test_stage2_output_loads_back(stage2_run, lm_dir, tiny_dataset):
    output = stage2_run.output_dir
    loaded = ALLMRecForConditionalGeneration.from_pretrained(output, base_model_name_or_path=lm_dir(stage2_run.family))
    processor = ALLMRecProcessor.from_pretrained(output)
    trained_processor = stage2_run.trainer.data_collator.processor
    assert processor.catalog == PreparedDataset.load(tiny_dataset).catalog
    assert processor.prompt_template == trained_processor.prompt_template
    batch = validation_batch(processor, tiny_dataset)
    expected_batch = validation_batch(trained_processor, tiny_dataset)
    assert all(torch.equal(batch[k], expected_batch[k]) for k in batch)

    model = stage2_run.trainer.model.eval()
    assert_same_tensors(dict(loaded.state_dict()), dict(model.state_dict()))
    with torch.no_grad():
        got, expected = loaded(**batch), model(**batch)
    assert torch.equal(got.logits, expected.logits)
    assert torch.equal(got.loss, expected.loss)
    results = json.loads(Path(output, "all_results.json").read_text())
    assert results["baseline"] == "a-llmrec" and results["train_loss"] == pytest.approx(
        stage2_run.results["train_loss"]
    )


def test_stage2_initialisation_follows_the_seed(stage1_run, tiny_dataset, lm_dir, tmp_path):
    """The projectors are initialised under `--seed`, whatever the global random state was before."""
    runs = []
    for index, (seed, noise) in enumerate([(0, 1), (0, 2), (1, 1)]):
        torch.manual_seed(noise)
        runs.append(
            run_example(
                "train_stage2",
                ["--dataset_dir", tiny_dataset, "--stage1_model_path", stage1_run.output_dir, "--llm", lm_dir()]
                + ["--output_dir", str(tmp_path / str(index)), "--max_steps", "1", "--seed", str(seed), *STAGE2_ARGS],
            )
        )
    projectors = [{k: v for k, v in run.initial.items() if "projector" in k} for run in runs]
    assert_same_tensors(projectors[0], projectors[1])
    assert all(
        not torch.equal(projectors[0][k], projectors[2][k]) for k in projectors[0] if k.endswith("linear_1.weight")
    )


# =========================================================================================== baselines
def test_mlp_llm_baseline(cf_run, tiny_dataset, lm_dir, tmp_path):
    run = run_example(
        "train_stage2",
        ["--dataset_dir", tiny_dataset, "--baseline", "mlp_llm", "--cf_model_path", cf_run.output_dir]
        + ["--llm", lm_dir(), "--output_dir", str(tmp_path / "mlp"), "--max_steps", "4", *STAGE2_ARGS],
    )
    model = run.trainer.model
    assert model.config.item_projector_input == "cf_embedding"
    assert model.item_projector.linear_1.in_features == cf_run.trainer.model.config.hidden_size == 32
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(name.split(".")[0] in ("user_projector", "item_projector") for name in trainable)
    assert all(not torch.equal(dict(model.named_parameters())[name], run.initial[name]) for name in trainable)
    assert_same_tensors(
        dict(model.recommender.cf_model.state_dict()), dict(SASRecModel.from_pretrained(cf_run.output_dir).state_dict())
    )
    assert run.results["baseline"] == "mlp_llm" and np.isfinite(run.results["train_loss"])

    loaded = ALLMRecForConditionalGeneration.from_pretrained(str(tmp_path / "mlp"), base_model_name_or_path=lm_dir())
    batch = validation_batch(ALLMRecProcessor.from_pretrained(str(tmp_path / "mlp")), tiny_dataset)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model.eval()(**batch).logits)


@pytest.mark.parametrize("source", ["stage1", "cf"])
def test_llm_only_baseline(source, stage1_run, cf_run, tiny_dataset, lm_dir, tmp_path):
    """Nothing trains, and the saved processor's prompts have no placeholders. The frozen recommender it carries
    can come from a stage-1 or (no stage 1 needed) a CF checkpoint."""
    output = str(tmp_path / "llm_only")
    checkpoint = ["--stage1_model_path", stage1_run.output_dir] if source == "stage1" else []
    checkpoint += ["--cf_model_path", cf_run.output_dir] if source == "cf" else []
    run = run_example(
        "train_stage2",
        ["--dataset_dir", tiny_dataset, "--baseline", "llm_only", *checkpoint, "--llm", lm_dir()]
        + ["--output_dir", output, *STAGE2_ARGS],
    )
    assert run.trainer is None
    assert run.results["baseline"] == "llm_only" and not any(key.startswith("train") for key in run.results)
    assert not glob.glob(os.path.join(output, "checkpoint-*"))

    processor = ALLMRecProcessor.from_pretrained(output)
    assert not processor.prompt_template.uses_embeddings
    batch = validation_batch(processor, tiny_dataset)
    placeholders = torch.tensor(list(processor.placeholder_token_ids.values()))
    assert not torch.isin(batch["input_ids"], placeholders).any()
    assert not batch["item_ids"].any()
    assert "[UserRep]" not in processor.decode(batch["input_ids"][0])
    model = ALLMRecForConditionalGeneration.from_pretrained(output, base_model_name_or_path=lm_dir())
    with torch.no_grad():
        out = model(**batch)
    assert out.user_features is None and out.item_features is None and torch.isfinite(out.loss)


# ================================================================================================ LoRA
# LoRA r=2 on q_proj/v_proj of the tiny llama LM, 4 steps, a checkpoint every 2 (the later options override
# STAGE2_ARGS' `--save_strategy no`).
LORA_ARGS = ["--max_steps", "4", *STAGE2_ARGS, "--lora_r", "2", "--save_strategy", "steps", "--save_steps", "2"]


@pytest.fixture(scope="module")
def lora_command(stage1_run, tiny_dataset, lm_dir):
    def command(output) -> list[str]:
        sources = ["--dataset_dir", tiny_dataset, "--stage1_model_path", stage1_run.output_dir, "--llm", lm_dir()]
        return sources + ["--output_dir", str(output), *LORA_ARGS]

    return command


@pytest.fixture(scope="module")
def lora_run(lora_command, training_root):
    pytest.importorskip("peft")
    return run_example("train_stage2", lora_command(training_root / "stage2_lora"))


def test_lora(lora_run, tiny_dataset, lm_dir):
    from peft import PeftModel

    run, output = lora_run, lora_run.output_dir
    model = run.trainer.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    lora = {name for name in trainable if "lora_" in name}
    assert lora and trainable - lora == {name for name in trainable if "projector" in name}
    assert all(name.startswith("language_model.") and (".q_proj." in name or ".v_proj." in name) for name in lora)
    assert len(lora) == 2 * 2 * 2  # 2 layers x (q_proj, v_proj) x (A, B)
    current = dict(model.named_parameters())
    assert all(not torch.equal(current[name], run.initial[name]) for name in trainable)
    # The LM's own weights do not move.
    base = {k.replace(".base_layer", ""): v for k, v in model.language_model.state_dict().items() if "lora_" not in k}
    assert_same_tensors(base, dict(AutoModelForCausalLM.from_pretrained(lm_dir("llama")).state_dict()))
    # The Trainer's checkpoints hold the adapter with the projectors.
    assert set(load_file(os.path.join(output, "checkpoint-4", TRAINABLE_WEIGHTS_NAME))) == trainable

    adapter_dir = os.path.join(output, "lm_adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(adapter_dir))
    adapter_config = json.loads(Path(adapter_dir, "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA" and adapter_config["r"] == 2
    assert adapter_config["base_model_name_or_path"] == lm_dir("llama")
    assert not any(k.startswith("language_model.") for k in load_file(os.path.join(output, "model.safetensors")))
    loaded = ALLMRecForConditionalGeneration.from_pretrained(output, base_model_name_or_path=lm_dir("llama"))
    assert not any(p.requires_grad for p in loaded.language_model.parameters())
    batch = validation_batch(ALLMRecProcessor.from_pretrained(output), tiny_dataset)
    with torch.no_grad():
        got, expected = loaded(**batch).logits, model.eval()(**batch).logits
    assert torch.equal(got, expected)
    without_adapter = ALLMRecForConditionalGeneration.from_pretrained(
        output, base_model_name_or_path=lm_dir("llama"), config=_without_adapter(output)
    )
    with torch.no_grad():
        assert not torch.allclose(without_adapter(**batch).logits, expected)

    # lm_adapter/ is a standard PEFT adapter folder: PeftModel puts it on the base LM with the same result.
    peft_lm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lm_dir("llama")), adapter_dir).eval()
    input_ids = torch.randint(model.config.text_config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(peft_lm(input_ids=input_ids).logits, model.language_model(input_ids=input_ids).logits)


def test_lora_resume_restores_the_adapter(lora_command, lora_run, tmp_path):
    output = tmp_path / "run"
    with pytest.raises(Interrupted):
        run_example("train_stage2", lora_command(output), callbacks=[InterruptAt(3)])
    assert sorted(os.listdir(output)) == ["checkpoint-2"]
    expected = {name: p for name, p in lora_run.trainer.model.named_parameters() if p.requires_grad}
    saved = load_file(output / "checkpoint-2" / TRAINABLE_WEIGHTS_NAME)
    assert set(saved) == set(expected) and any(".lora_A.default." in name for name in saved)

    resumed = run_example("train_stage2", lora_command(output))  # the same command again resumes
    assert resumed.trainer.state.global_step == 4
    got = {name: p for name, p in resumed.trainer.model.named_parameters() if p.requires_grad}
    assert_same_tensors(got, expected)


def _without_adapter(output):
    config = ALLMRecConfig.from_pretrained(output)
    config.lm_adapter_subfolder = None
    return config


# ========================================================================================== bad input
@pytest.fixture(scope="module")
def other_datasets(training_root):
    """Datasets whose items are not the tiny dataset's: other ids (same count), and fewer items."""
    return {
        "other_ids": write_dataset(training_root / "data_other_ids", id_prefix="j"),
        "fewer_items": write_dataset(training_root / "data_fewer_items", num_items=36),
    }


def test_stage2_refuses_a_cf_checkpoint(cf_run, tiny_dataset, lm_dir, tmp_path):
    with pytest.raises(CheckpointMismatchError, match=r"stage-1 aligner checkpoint .*a CF checkpoint"):
        run_example(
            "train_stage2",
            ["--dataset_dir", tiny_dataset, "--stage1_model_path", cf_run.output_dir, "--llm", lm_dir()]
            + ["--output_dir", str(tmp_path / "out"), *STAGE2_ARGS],
        )
    assert not (tmp_path / "out").exists()


def test_stage1_refuses_a_stage1_checkpoint_as_cf_model(stage1_run, tiny_dataset, text_encoder_dir, tmp_path):
    with pytest.raises(CheckpointMismatchError, match=r"needs a CF checkpoint.*is a stage-1 aligner checkpoint"):
        run_example(
            "train_stage1",
            ["--dataset_dir", tiny_dataset, "--cf_model_path", stage1_run.output_dir]
            + ["--text_encoder", text_encoder_dir, "--output_dir", str(tmp_path / "out")],
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("other_ids", r"item 1 is 'j\d+' but in .* it is 'i\d+'"),
        ("fewer_items", r"has 36 items but .* was trained on 40"),
    ],
)
def test_items_must_be_the_checkpoints(
    which, message, other_datasets, cf_run, stage1_run, text_encoder_dir, lm_dir, tmp_path
):
    dataset = other_datasets[which]
    with pytest.raises(CheckpointMismatchError, match=message):
        run_example(
            "train_stage1",
            ["--dataset_dir", dataset, "--cf_model_path", cf_run.output_dir, "--text_encoder", text_encoder_dir]
            + ["--output_dir", str(tmp_path / "stage1")],
        )
    with pytest.raises(CheckpointMismatchError, match=message):
        run_example(
            "train_stage2",
            ["--dataset_dir", dataset, "--stage1_model_path", stage1_run.output_dir, "--llm", lm_dir()]
            + ["--output_dir", str(tmp_path / "stage2"), *STAGE2_ARGS],
        )
    with pytest.raises(CheckpointMismatchError, match=message):
        run_example(
            "train_stage2",
            ["--dataset_dir", dataset, "--baseline", "mlp_llm", "--cf_model_path", cf_run.output_dir]
            + ["--llm", lm_dir(), "--output_dir", str(tmp_path / "mlp"), *STAGE2_ARGS],
        )
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("script", ["pretrain_cf", "train_stage1", "train_stage2"])
def test_missing_dataset(script, tmp_path, cf_run, stage1_run):
    checkpoint = {
        "pretrain_cf": [],
        "train_stage1": ["--cf_model_path", cf_run.output_dir],
        "train_stage2": ["--stage1_model_path", stage1_run.output_dir],
    }[script]
    with pytest.raises(FileNotFoundError, match=r"No prepared dataset at .*no_such_dataset: the folder does not exist"):
        run_example(
            script,
            ["--dataset_dir", str(tmp_path / "no_such_dataset"), "--output_dir", str(tmp_path / "out"), *checkpoint],
        )
    assert not (tmp_path / "out").exists()


def test_training_rows_leave_out_users_without_a_history(caplog):
    """Stage 1 and CF pretraining learn history -> next item; a user whose whole training sequence is one item has
    nothing to learn from and is left out, counted and logged."""
    import logging
    from types import SimpleNamespace

    import pandas as pd

    from allmrec_hf.data import InteractionLog, prepare_dataset
    from allmrec_hf.training.runs import training_rows

    log = InteractionLog.from_frames(
        pd.DataFrame({"user_id": list("aaaaabbbc"), "item_id": list("123453456")}),
        pd.DataFrame({"item_id": list("123456789"), "title": list("ABCDEFGHI")}),
    )
    data = prepare_dataset(log, num_negatives=1, seed=0)  # b: 3 items -> training sequence of 1; c: 1 item
    args = SimpleNamespace(few_shot_users=None, max_train_samples=None)
    assert len(training_rows(data, args)) == 3
    with caplog.at_level(logging.INFO, logger="allmrec_hf.training.runs"):
        kept = training_rows(data, args, require_history=True)
    assert list(kept["user"]) == [1]
    assert "2 of 3 training users have a single training interaction" in caplog.text


def test_stage1_script_asks_for_users_with_a_history(monkeypatch, tiny_dataset, cf_run, tmp_path):
    from training_helpers import example_module

    module = example_module("train_stage1")
    seen = {}

    def stop(data, data_args, require_history=False):
        seen["require_history"] = require_history
        raise RuntimeError("stop here")

    monkeypatch.setattr(module, "training_rows", stop)
    argv = ["--dataset_dir", tiny_dataset, "--cf_model_path", cf_run.output_dir, "--output_dir", str(tmp_path / "o")]
    with pytest.raises(RuntimeError, match="stop here"):
        module.main(argv)
    assert seen == {"require_history": True}


def test_stage2_lm_loading_options(stage1_run, tiny_dataset, lm_dir, tmp_path):
    """--lm_dtype and --attn_implementation reach the LM; the projectors stay float32; a bad dtype is refused
    before anything is built."""
    base = ["--dataset_dir", tiny_dataset, "--stage1_model_path", stage1_run.output_dir, "--llm", lm_dir("llama")]
    with pytest.raises(ValueError, match="--lm_dtype 'bfloat17' is not a torch dtype"):
        run_example("train_stage2", base + ["--output_dir", str(tmp_path / "bad"), "--lm_dtype", "bfloat17"])
    assert not (tmp_path / "bad").exists()
    run = run_example(
        "train_stage2",
        base
        + ["--output_dir", str(tmp_path / "ok"), "--max_steps", "2", *STAGE2_ARGS]
        + ["--lm_dtype", "bfloat16", "--attn_implementation", "eager"],
    )
    model = run.trainer.model
    assert model.language_model.dtype == torch.bfloat16
    assert model.language_model.config._attn_implementation == "eager"
    assert model.user_projector.linear_1.weight.dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(v)) for v in run.losses().values())


def test_stage2_compiled_language_model_trains_the_same(stage1_run, tiny_dataset, lm_dir, tmp_path):
    """--compile_language_model wraps the LM's decoder in torch.compile (here with the quick "eager" backend, which
    traces the graph without generating code) and trains to the same losses as the plain run."""
    base = ["--dataset_dir", tiny_dataset, "--stage1_model_path", stage1_run.output_dir, "--llm", lm_dir("llama")]
    base += ["--max_steps", "3", *STAGE2_ARGS]
    plain = run_example("train_stage2", base + ["--output_dir", str(tmp_path / "plain")])
    compiled = run_example(
        "train_stage2",
        base + ["--output_dir", str(tmp_path / "compiled"), "--compile_language_model", "--compile_backend", "eager"],
    )
    decoder = compiled.trainer.model.language_model.get_decoder()
    assert hasattr(decoder.forward, "_torchdynamo_orig_callable") or "compile" in repr(decoder.forward).lower()
    plain_losses, compiled_losses = plain.losses(), compiled.losses()
    assert sorted(plain_losses) == sorted(compiled_losses) == [1, 2, 3]
    for step in plain_losses:
        assert compiled_losses[step] == pytest.approx(plain_losses[step], rel=1e-5)


def test_stage2_trainer_releases_freed_memory_on_cpu_unless_told_not_to(stage2_run, tmp_path):
    from transformers import TrainingArguments

    from allmrec_hf.training.memory import ReleaseFreedMemoryCallback
    from allmrec_hf.training.trainers import Stage2Trainer

    def releasing(trainer):
        return [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ReleaseFreedMemoryCallback)]

    assert [cb.max_growth for cb in releasing(stage2_run.trainer)] == [2 * 2**30]
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    model = stage2_run.trainer.model
    assert releasing(Stage2Trainer(model=model, args=args, release_freed_memory_after_gb=None)) == []
    assert [
        cb.max_growth for cb in releasing(Stage2Trainer(model=model, args=args, release_freed_memory_after_gb=0.5))
    ] == [2**29]
