#!/usr/bin/env python
"""Stage 2 of A-LLMRec: teach a frozen causal LM to use the CF knowledge. Only the user and item projectors
train; the LM, the CF model and the stage-1 aligner stay frozen. Each training example gets a fresh seeded
candidate set (the target plus 19 unseen items) and the target's title as the answer.

    python examples/train_stage2.py --dataset_dir outputs/data/ml-100k --stage1_model_path outputs/stage1 \\
        --llm HuggingFaceTB/SmolLM2-135M-Instruct --output_dir outputs/stage2

Baselines of the paper through the same script:
    --baseline mlp_llm --cf_model_path outputs/cf     # projectors on the raw CF embeddings, no stage 1
    --baseline llm_only                               # the prompt with titles only; nothing trains

Defaults follow the paper (Adam lr 1e-4, batch 4, 5 epochs; bf16 autocast on GPUs that have it). `--lora_r 8`
also adapts the LM with LoRA (needs `pip install peft`). Multi-GPU: `accelerate launch --config_file
examples/accelerate_configs/ddp.yaml examples/train_stage2.py ...`. The output folder is a complete recommender
(`ALLMRecForConditionalGeneration.from_pretrained` + `ALLMRecProcessor.from_pretrained`).
"""

from __future__ import annotations

import logging
import os

from transformers import AutoTokenizer, set_seed

from allmrec_hf import PromptTemplate
from allmrec_hf.data import PreparedDataset
from allmrec_hf.model_card import write_model_card
from allmrec_hf.training.arguments import DataArguments, Stage2ModelArguments, Stage2TrainingArguments
from allmrec_hf.training.builders import build_stage2_model, compile_language_model, load_aligner, load_cf_model
from allmrec_hf.training.collators import SetEpochCallback, Stage2Collator
from allmrec_hf.training.dtypes import dtype_name, resolve_lm_dtype
from allmrec_hf.training.lora import apply_lora
from allmrec_hf.training.runs import (
    OutputArguments,
    checkpoint_to_resume,
    end_distributed_run,
    evaluation_rows,
    finished_results,
    models_built_whole,
    parse_arguments,
    run_script,
    save_trained_model,
    setup_logging,
    training_rows,
    write_results,
)
from allmrec_hf.training.trainers import Stage2Trainer

logger = logging.getLogger("train_stage2")
BASELINES = (None, "mlp_llm", "llm_only")


def _with_lengths(rows, catalog, shown: int):
    """A `length` column for length-grouped batching: the characters of the history titles the prompt shows."""

    def lengths(batch):
        return {"length": [sum(len(catalog.title(i)) for i in h[-shown:]) if shown else 0 for h in batch["history"]]}

    return rows.map(lengths, batched=True, desc="prompt lengths")


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args, output_args = parse_arguments(
        (Stage2ModelArguments, DataArguments, Stage2TrainingArguments, OutputArguments), argv
    )
    setup_logging(training_args)
    if model_args.baseline not in BASELINES:
        raise ValueError(f"--baseline must be one of mlp_llm, llm_only (or unset), got {model_args.baseline!r}.")
    done = finished_results(training_args.output_dir, output_args.overwrite_output_dir)
    if done is not None:
        return done

    data = PreparedDataset.load(data_args.dataset_dir)
    words = {
        "noun": model_args.noun,
        "verb": model_args.verb,
        "past_verb": model_args.past_verb,
        "history_length": model_args.prompt_history_length,
    }
    template = (
        PromptTemplate.without_embeddings(**words) if model_args.baseline == "llm_only" else PromptTemplate(**words)
    )
    lm_dtype = resolve_lm_dtype(model_args.lm_dtype)  # auto: bfloat16 only where it runs natively
    model_args.lm_dtype = dtype_name(lm_dtype)  # recorded (card, results) as resolved
    lm_kwargs = {"dtype": lm_dtype} if lm_dtype else {}
    if model_args.attn_implementation:
        lm_kwargs["attn_implementation"] = model_args.attn_implementation
    set_seed(training_args.seed)  # before the projectors are initialised
    with models_built_whole(training_args):  # under DeepSpeed ZeRO-3: whole, partitioned once training starts
        # llm_only carries a frozen recommender it never uses: from --cf_model_path when given (no stage 1 needed).
        llm_only_from_cf = model_args.cf_model_path or not model_args.stage1_model_path
        if model_args.baseline == "mlp_llm" or (model_args.baseline == "llm_only" and llm_only_from_cf):
            if not model_args.cf_model_path:
                raise ValueError(
                    f"--baseline {model_args.baseline} needs --cf_model_path (a pretrained CF checkpoint)."
                )
            cf_model = load_cf_model(model_args.cf_model_path, data.catalog)
            model, processor = build_stage2_model(
                None,
                model_args.llm,
                None,
                data.catalog,
                template,
                model_args.max_history_length,
                lm_kwargs=lm_kwargs,
                cf_model=cf_model,
            )
        else:
            aligner = load_aligner(model_args.stage1_model_path, data.catalog)  # checks kind and items first
            text_tokenizer = AutoTokenizer.from_pretrained(model_args.stage1_model_path)
            model, processor = build_stage2_model(
                aligner,
                model_args.llm,
                text_tokenizer,
                data.catalog,
                template,
                model_args.max_history_length,
                lm_kwargs=lm_kwargs,
            )
    if model_args.lora_r:
        apply_lora(model, model_args.lora_r, model_args.lora_alpha, model_args.lora_target_modules.split(","))
    if model_args.compile_language_model:
        compile_language_model(model, model_args.compile_backend)
    logger.info(model.print_trainable_parameters())

    results: dict = {
        "baseline": model_args.baseline or "a-llmrec",
        "dataset_dir": os.path.abspath(data_args.dataset_dir),
    }
    if model_args.baseline != "llm_only":
        train_rows = _with_lengths(training_rows(data, data_args), data.catalog, model_args.prompt_history_length)
        collator = Stage2Collator(processor, data.num_items, model_args.num_candidates, seed=training_args.seed)
        trainer = Stage2Trainer(
            model=model,
            args=training_args,
            train_dataset=train_rows,
            eval_dataset=_with_lengths(evaluation_rows(data, data_args), data.catalog, 0)
            if training_args.eval_strategy != "no"
            else None,
            data_collator=collator,
            callbacks=[SetEpochCallback(collator)],
        )
        train_result = trainer.train(
            resume_from_checkpoint=checkpoint_to_resume(training_args, output_args.overwrite_output_dir)
        )
        results.update(train_result.metrics)
        # Every process takes part (under FSDP / DeepSpeed the weights are gathered first); the main one writes.
        is_main = save_trained_model(trainer, model, training_args.output_dir)
    else:
        logger.info("LLM-only baseline: nothing trains; saving the model and its titles-only prompt.")
        is_main = int(os.environ.get("RANK", "0")) == 0
        if is_main:
            model.save_pretrained(training_args.output_dir)
    if is_main:
        processor.save_pretrained(training_args.output_dir)
        write_results(training_args.output_dir, results)
        write_model_card(
            "recommender", training_args.output_dir, model=model, dataset=data, training_results=results,
            arguments=(model_args, data_args, training_args),
        )  # fmt: skip
        logger.info("Recommender saved to %s", training_args.output_dir)
    return results


if __name__ == "__main__":
    run_script(main)
    end_distributed_run()
