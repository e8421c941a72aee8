#!/usr/bin/env python
"""Pretrain the CF model (SASRec by default; `--cf_model gru4rec` or `nextitnet` for the other backbones) on a
prepared dataset: BCE with one sampled negative per position, evaluated every epoch by Hit@10 / NDCG@10 on the
persisted validation candidate sets, best epoch kept (early stopping).

    python examples/pretrain_cf.py --dataset_dir outputs/data/ml-100k --output_dir outputs/cf
    python examples/pretrain_cf.py --cf_model gru4rec --output_dir outputs/cf-gru4rec
    python examples/pretrain_cf.py args.json              # every argument from one JSON file
    accelerate launch examples/pretrain_cf.py ...         # several processes / GPUs

Running the same command again resumes an interrupted run from its last checkpoint (or skips a finished one).
The output folder holds the model (`from_pretrained`-able), the item catalog and `all_results.json`.
"""

from __future__ import annotations

import json
import logging
import os

from transformers import EarlyStoppingCallback, set_seed

from allmrec_hf.data import PreparedDataset
from allmrec_hf.model_card import write_model_card
from allmrec_hf.training.arguments import CFModelArguments, CFTrainingArguments, DataArguments
from allmrec_hf.training.builders import CF_MODEL_TYPES, build_cf_model, checkpoint_model_type
from allmrec_hf.training.collators import CFCollator, SetEpochCallback
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
from allmrec_hf.training.trainers import CFTrainer

logger = logging.getLogger("pretrain_cf")


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args, output_args = parse_arguments(
        (CFModelArguments, DataArguments, CFTrainingArguments, OutputArguments), argv
    )
    setup_logging(training_args)
    if model_args.cf_model not in CF_MODEL_TYPES:
        raise ValueError(
            f"Unknown --cf_model {model_args.cf_model!r}; choose one of {', '.join(CF_MODEL_TYPES)} (or register a "
            "custom backbone with allmrec_hf.register_cf_model before calling main())."
        )
    config_kwargs = json.loads(model_args.cf_config_kwargs) if model_args.cf_config_kwargs else None
    if config_kwargs is not None and not isinstance(config_kwargs, dict):
        raise ValueError(f"--cf_config_kwargs must be a JSON object, got {model_args.cf_config_kwargs!r}.")
    done = finished_results(training_args.output_dir, output_args.overwrite_output_dir)
    if done is not None:
        finished = checkpoint_model_type(training_args.output_dir)
        if finished != model_args.cf_model:
            raise ValueError(
                f"{training_args.output_dir} holds a finished {finished!r} CF model, not {model_args.cf_model!r}: "
                "choose another --output_dir (or --overwrite_output_dir true)."
            )
        return done

    data = PreparedDataset.load(data_args.dataset_dir)
    train_rows = training_rows(data, data_args, require_history=True)
    eval_rows = evaluation_rows(data, data_args)
    set_seed(training_args.seed)
    with models_built_whole(training_args):  # under DeepSpeed ZeRO-3: whole, partitioned once training starts
        model = build_cf_model(
            model_args.cf_model,
            data.num_items,
            config_kwargs=config_kwargs,
            hidden_size=model_args.hidden_size,
            max_seq_length=model_args.max_length,
            num_hidden_layers=model_args.num_hidden_layers,
            num_attention_heads=model_args.num_attention_heads,
            hidden_dropout_prob=model_args.dropout,
            attention_dropout_prob=model_args.dropout,
        )
    # The backbone's defaults, for the model card's settings table.
    model_args.num_hidden_layers = getattr(model.config, "num_hidden_layers", model_args.num_hidden_layers)
    model_args.num_attention_heads = getattr(model.config, "num_attention_heads", model_args.num_attention_heads)
    model_args.dropout = getattr(model.config, "hidden_dropout_prob", model_args.dropout)
    collator = CFCollator.for_config(model.config, seed=training_args.seed)
    callbacks = [SetEpochCallback(collator)]
    if model_args.early_stopping_patience and training_args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=model_args.early_stopping_patience))
    trainer = CFTrainer(
        model=model,
        args=training_args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=collator,
        callbacks=callbacks,
    )
    train_result = trainer.train(
        resume_from_checkpoint=checkpoint_to_resume(training_args, output_args.overwrite_output_dir)
    )
    results = {f"train_{k}" if not k.startswith("train") else k: v for k, v in train_result.metrics.items()}
    results.update(trainer.evaluate(eval_rows, metric_key_prefix="eval"))
    results.update(trainer.evaluate(evaluation_rows(data, data_args, "test"), metric_key_prefix="test"))
    if save_trained_model(trainer, model, training_args.output_dir):  # every process calls it; the main one writes
        data.catalog.save(training_args.output_dir)
        results["dataset_dir"] = os.path.abspath(data_args.dataset_dir)
        write_results(training_args.output_dir, results)
        write_model_card(
            "cf", training_args.output_dir, model=model, dataset=data, training_results=results,
            arguments=(model_args, data_args, training_args),
        )  # fmt: skip
        logger.info(
            "CF model saved to %s: test hit@10 %.4f, ndcg@10 %.4f",
            training_args.output_dir,
            results["test_hit@10"],
            results["test_ndcg@10"],
        )
    return results


if __name__ == "__main__":
    run_script(main)
    end_distributed_run()
