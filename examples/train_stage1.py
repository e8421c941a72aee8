#!/usr/bin/env python
"""Stage 1 of A-LLMRec: align the frozen CF model's item embeddings with item text. The paper's four losses
(matching, item and text reconstruction with weights alpha and beta, recommendation), the sentence encoder
(all-MiniLM-L6-v2 by default) fine-tuned, trained on each user's last training item (or every position).

    python examples/train_stage1.py --dataset_dir outputs/data/ml-100k --cf_model_path outputs/cf \\
        --output_dir outputs/stage1

Defaults follow the paper (Adam lr 1e-4, batch 32, 10 epochs); any can be overridden. Running the same command
again resumes an interrupted run (or skips a finished one). The output folder holds the aligner
(`ALLMRecAlignerModel.from_pretrained`), the sentence encoder's tokenizer, the item catalog and `all_results.json`.
"""

from __future__ import annotations

import copy
import logging
import os

from transformers import set_seed

from allmrec_hf import ALLMRecProcessor
from allmrec_hf.data import PreparedDataset
from allmrec_hf.model_card import write_model_card
from allmrec_hf.training.arguments import DataArguments, Stage1ModelArguments, Stage1TrainingArguments
from allmrec_hf.training.builders import build_aligner, load_aligner, load_cf_model
from allmrec_hf.training.collators import SetEpochCallback, Stage1Collator
from allmrec_hf.training.runs import (
    OutputArguments,
    checkpoint_to_resume,
    end_distributed_run,
    finished_results,
    models_built_whole,
    parse_arguments,
    run_script,
    save_trained_model,
    setup_logging,
    training_rows,
    write_results,
)
from allmrec_hf.training.trainers import Stage1Trainer

logger = logging.getLogger("train_stage1")


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args, output_args = parse_arguments(
        (Stage1ModelArguments, DataArguments, Stage1TrainingArguments, OutputArguments), argv
    )
    setup_logging(training_args)
    done = finished_results(training_args.output_dir, output_args.overwrite_output_dir)
    if done is not None:
        return done

    data = PreparedDataset.load(data_args.dataset_dir)
    train_rows = training_rows(data, data_args, require_history=True)
    set_seed(training_args.seed)
    with models_built_whole(training_args):  # under DeepSpeed ZeRO-3: whole, partitioned once training starts
        cf_model = load_cf_model(model_args.cf_model_path, data.catalog)  # checks kind and items before training
        aligner, text_tokenizer = build_aligner(
            cf_model,
            model_args.text_encoder,
            model_args.latent_size,
            model_args.alpha,
            model_args.beta,
            latent_activation=model_args.latent_activation,
            uniformity_weight=model_args.uniformity_weight,
        )
    # Only the sentence-encoder side of the processor is used here (item texts from the catalog). Its LM side gets
    # a copy: the processor adds placeholder tokens to it, which the saved sentence-encoder tokenizer must not have.
    processor = ALLMRecProcessor(
        copy.deepcopy(text_tokenizer),
        text_tokenizer,
        data.catalog,
        item_text_template=model_args.item_text_template,
        item_text_max_length=model_args.item_text_max_length,
    )
    collator = Stage1Collator(
        processor,
        data.num_items,
        cf_model.config.max_seq_length,
        seed=training_args.seed,
        all_positions=model_args.all_positions,
    )
    trainer = Stage1Trainer(
        model=aligner,
        args=training_args,
        train_dataset=train_rows,
        data_collator=collator,
        callbacks=[SetEpochCallback(collator)],
    )
    train_result = trainer.train(
        resume_from_checkpoint=checkpoint_to_resume(training_args, output_args.overwrite_output_dir)
    )
    results = dict(train_result.metrics)
    if save_trained_model(trainer, aligner, training_args.output_dir):  # every process calls it; the main one writes
        # Whether the items stay apart in the joint latent space stage 2 injects (the paper's sigmoid tends to
        # collapse), measured on the saved weights, loaded whole by this process alone (under ZeRO-3 a plain
        # from_pretrained would partition them with collectives the other processes never join: a hang).
        with models_built_whole(training_args):
            diversity = load_aligner(training_args.output_dir).latent_diversity()
        results.update({f"latent_{name}": value for name, value in diversity.items()})
        logger.info(
            "Joint latents of the %d catalog items: mean pairwise cosine %.4f (%.4f with the mean removed), "
            "per-dimension std %.4f",
            data.num_items,
            diversity["mean_pairwise_cosine"],
            diversity["centered_mean_pairwise_cosine"],
            diversity["mean_dimension_std"],
        )
        text_tokenizer.save_pretrained(training_args.output_dir)
        data.catalog.save(training_args.output_dir)
        results.update(
            dataset_dir=os.path.abspath(data_args.dataset_dir),
            cf_model_path=os.path.abspath(model_args.cf_model_path),
            item_text_template=model_args.item_text_template,
        )
        write_results(training_args.output_dir, results)
        write_model_card(
            "aligner", training_args.output_dir, model=aligner, dataset=data, training_results=results,
            arguments=(model_args, data_args, training_args),
        )  # fmt: skip
        logger.info("Stage-1 aligner saved to %s (train loss %.4f)", training_args.output_dir, results["train_loss"])
    return results


if __name__ == "__main__":
    run_script(main)
    end_distributed_run()
