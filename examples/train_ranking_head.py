#!/usr/bin/env python
"""Train A-LLMRec's ranking head (`ALLMRecForItemRanking`): the frozen LM reads each training user's last
`--ranking_history_length` items (50), each as its item embedding and an output token carrying the CF model's state
after it; every output token's hidden state is trained to score the next item (cross-entropy over the whole
catalog, or over `--num_negatives` sampled ones). Only the projectors, the output token and the two heads train.
Validation NDCG@10 on the persisted candidates is measured every epoch; training stops after
`--early_stopping_patience` epochs without a gain and keeps the best epoch.

    python examples/train_ranking_head.py --dataset_dir outputs/data/ml-100k --cf_model_path outputs/cf \\
        --lm_dtype auto --lm_num_layers 10 --output_dir outputs/ranking_head

From a stage-1 checkpoint instead (the projectors read its latents; `--item_head_input joint` or `text` also feeds
them to the item head): `--stage1_model_path outputs/stage1`. The prompt: `--history_titles` also names each item
(`--ranking_item_text "{title}, {genres}"` with more of the catalog than titles; measured worse on ML-100k, and
about 3 times as long). Ablations: `--no_user_representation`, `--history_titles --no_history_embeddings`;
LLM-SRec's terms: `--distillation_weight`, `--uniformity_weight`. `--lora_r 8` also adapts the LM with LoRA
(measured as an option, never the default). `--lm_num_layers N` reads the output token after the LM's first N
decoder layers (the later ones are neither loaded nor run). Multi-GPU: `accelerate launch --config_file
examples/accelerate_configs/ddp.yaml examples/train_ranking_head.py ...`. The output folder is a complete
recommender (`ALLMRecForItemRanking.from_pretrained` + `ALLMRecProcessor.from_pretrained`). Rerunning the same
command resumes an interrupted run from its last checkpoint.
"""

from __future__ import annotations

import logging
import os

from transformers import AutoTokenizer, EarlyStoppingCallback, set_seed

from allmrec_hf.data import PreparedDataset
from allmrec_hf.evaluation.fusion import choose_cf_score_weight, fused_scores
from allmrec_hf.evaluation.metrics import ranking_metrics, target_ranks
from allmrec_hf.model_card import write_model_card
from allmrec_hf.training.arguments import DataArguments, RankingModelArguments, RankingTrainingArguments
from allmrec_hf.training.builders import build_stage2_model, load_aligner, load_cf_model
from allmrec_hf.training.collators import RankingCollator, SetEpochCallback
from allmrec_hf.training.dtypes import dtype_name, resolve_lm_dtype
from allmrec_hf.training.lora import apply_lora
from allmrec_hf.training.runs import (
    OutputArguments,
    checkpoint_to_resume,
    cut_point_rows,
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
from allmrec_hf.training.trainers import RankingTrainer

logger = logging.getLogger("train_ranking_head")


def ranking_config_fields(model_args: RankingModelArguments) -> dict:
    """The `ALLMRecRankingConfig` fields the command line sets."""
    return {
        "item_head_input": model_args.item_head_input,
        "ranking_hidden_size": model_args.ranking_hidden_size,
        "use_user_representation": not model_args.no_user_representation,
        "item_bias": model_args.item_bias,
        "cf_skip": model_args.cf_skip,
        "temperature": model_args.temperature,
        "distillation_weight": model_args.distillation_weight,
        "uniformity_weight": model_args.uniformity_weight,
        "lm_num_layers": model_args.lm_num_layers,
    }  # cf_score_weight is set after training (chosen on validation with 'auto')


def final_evaluation(trainer: RankingTrainer, test_rows, weight: float | None, results: dict) -> float:
    """Validation and test figures of the kept epoch into `results`, with the CF score added at `weight` (None:
    the weight that maximises validation NDCG@10, `choose_cf_score_weight`); the pure head's figures beside them
    (`eval_head_only_*`, `test_head_only_*`) when the weight is not 0. Returns the weight."""
    parts = {
        "eval": trainer.candidate_score_parts(trainer.eval_dataset),
        "test": trainer.candidate_score_parts(test_rows),
    }
    if weight is None:
        choice = choose_cf_score_weight(*parts["eval"], metric=trainer.args.metric_for_best_model or "ndcg@10")
        weight = choice.weight
        results["cf_score_weight_search"] = choice.to_dict()
        logger.info("CF score weight chosen on validation: %.4g (%g x the spread ratio %.4g)", weight,
                    choice.relative_weight, choice.scale)  # fmt: skip
    results["cf_score_weight"] = weight
    for prefix, (head, cf, positions) in parts.items():
        metrics = ranking_metrics(target_ranks(fused_scores(head, cf, weight), positions), trainer.eval_ks)
        named = {f"{prefix}_{k}": v for k, v in metrics.items()}
        if weight:  # the pure head beside the sum
            metrics = ranking_metrics(target_ranks(head, positions), trainer.eval_ks)
            named.update({f"{prefix}_head_only_{k}": v for k, v in metrics.items()})
        trainer.log(named)
        results.update(named)
    return weight


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args, output_args = parse_arguments(
        (RankingModelArguments, DataArguments, RankingTrainingArguments, OutputArguments), argv
    )
    setup_logging(training_args)
    lm_dtype = resolve_lm_dtype(model_args.lm_dtype)  # auto: bfloat16 only where it runs natively
    model_args.lm_dtype = dtype_name(lm_dtype)  # recorded (card, results) as resolved
    if model_args.item_head_input != "cf" and not model_args.stage1_model_path:
        raise ValueError(f"--item_head_input {model_args.item_head_input} needs --stage1_model_path (its latents).")
    if not (model_args.stage1_model_path or model_args.cf_model_path):
        raise ValueError("give --cf_model_path (a CF checkpoint) or --stage1_model_path (a stage-1 checkpoint).")
    done = finished_results(training_args.output_dir, output_args.overwrite_output_dir)
    if done is not None:
        return done

    data = PreparedDataset.load(data_args.dataset_dir)
    data.catalog.check_text_template(model_args.ranking_item_text, "--ranking_item_text")  # before the LM loads
    template = model_args.prompt_template()
    lm_kwargs = {"dtype": lm_dtype} if lm_dtype else {}
    if model_args.attn_implementation:
        lm_kwargs["attn_implementation"] = model_args.attn_implementation
    set_seed(training_args.seed)  # before the projectors and heads are initialised
    with models_built_whole(training_args):
        if model_args.stage1_model_path:
            aligner = load_aligner(model_args.stage1_model_path, data.catalog)  # checks kind and items first
            text_tokenizer, cf_model = AutoTokenizer.from_pretrained(model_args.stage1_model_path), None
        else:
            aligner, text_tokenizer = None, None
            cf_model = load_cf_model(model_args.cf_model_path, data.catalog)
        model, processor = build_stage2_model(
            aligner,
            model_args.llm,
            text_tokenizer,
            data.catalog,
            template,
            model_args.max_history_length,
            lm_kwargs=lm_kwargs,
            cf_model=cf_model,
            ranking_kwargs=ranking_config_fields(model_args),
        )
    if model_args.item_head_input == "text":
        model.compute_text_item_latents(processor)
    if model_args.lora_r:
        apply_lora(model, model_args.lora_r, model_args.lora_alpha, model_args.lora_target_modules.split(","))
    logger.info(model.print_trainable_parameters())

    rows = training_rows(data, data_args, require_history=True)
    train_rows = cut_point_rows(rows, model_args.cut_points, model_args.ranking_history_length)
    logger.info("%d training rows from %d users (%d cut points each at most)", len(train_rows), len(rows),
                model_args.cut_points)  # fmt: skip
    collator = RankingCollator(processor, data.num_items, model_args.num_negatives, seed=training_args.seed)
    callbacks = [SetEpochCallback(collator)]
    if model_args.early_stopping_patience is not None and training_args.eval_strategy != "no":
        callbacks.append(EarlyStoppingCallback(model_args.early_stopping_patience))
    trainer = RankingTrainer(
        model=model,
        args=training_args,
        processor=processor,
        train_dataset=train_rows,
        eval_dataset=evaluation_rows(data, data_args) if training_args.eval_strategy != "no" else None,
        data_collator=collator,
        callbacks=callbacks,
    )
    train_result = trainer.train(
        resume_from_checkpoint=checkpoint_to_resume(training_args, output_args.overwrite_output_dir)
    )
    results: dict = {"head": "ranking", "dataset_dir": os.path.abspath(data_args.dataset_dir), **train_result.metrics}
    weight = model_args.fixed_cf_score_weight()
    if trainer.eval_dataset is not None:  # the kept (best) epoch on validation, then on test
        weight = final_evaluation(trainer, evaluation_rows(data, data_args, "test"), weight, results)
    elif weight is None:
        logger.warning("--cf_score_weight auto needs a validation pass (--eval_strategy no): the head is saved alone.")
        weight = 0.0
    model.config.cf_score_weight = weight
    is_main = save_trained_model(trainer, model, training_args.output_dir)
    if is_main:
        processor.save_pretrained(training_args.output_dir)
        write_results(training_args.output_dir, results)
        write_model_card(
            "recommender", training_args.output_dir, model=model, dataset=data, training_results=results,
            arguments=(model_args, data_args, training_args),
        )  # fmt: skip
        logger.info(
            "Ranking recommender saved to %s%s", training_args.output_dir,
            f": test hit@1 {results['test_hit@1']:.4f}, ndcg@10 {results['test_ndcg@10']:.4f}"
            + (f" (CF score weight {weight:.4g}; the head alone {results['test_head_only_hit@1']:.4f}, "
               f"{results['test_head_only_ndcg@10']:.4f})" if weight else "")
            if "test_hit@1" in results else "",
        )  # fmt: skip
    return results


if __name__ == "__main__":
    run_script(main)
    end_distributed_run()
