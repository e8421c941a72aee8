"""`transformers.Trainer` subclasses for CF pretraining, the two A-LLMRec alignment stages and the ranking head.

What they add to the Trainer (which runs on Accelerate, so DDP / FSDP / DeepSpeed work through `accelerate
launch` or `torchrun`):

- Checkpoints hold only what trains: `trainable_weights.safetensors` (parameters with `requires_grad`, e.g. the
  projectors and a LoRA adapter's weights) plus the model config and the training arguments as JSON, besides the
  Trainer's optimizer, scheduler and RNG state.
  `resume_from_checkpoint` restores them; the frozen LM, CF encoder and aligner come from where they were loaded.
- Loss components (stage 1: matching, item/text reconstruction, recommendation; the ranking head: ranking,
  distillation, uniformity) are logged separately, averaged over the logging interval.
- `CFTrainer.evaluate` and `RankingTrainer.evaluate` compute Hit@K / NDCG@K on the persisted validation candidate
  sets, so early stopping can use them (`metric_for_best_model="ndcg@10"`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer

from ..evaluation.metrics import ranking_metrics, target_ranks
from .collators import left_pad
from .memory import ReleaseFreedMemoryCallback

logger = logging.getLogger(__name__)

TRAINABLE_WEIGHTS_NAME = "trainable_weights.safetensors"
TRAINING_ARGS_JSON = "training_args.json"
RUN_LOSS_STATE = "ALLMRecRunLoss"  # key in trainer_state.json's stateful_callbacks: the run's summed loss so far


def saved_run_loss(checkpoint: str | None) -> tuple[float | None, int]:
    """(summed training loss, global step) recorded in a checkpoint's `trainer_state.json`; (0.0, 0) without a
    checkpoint, (None, step) for a checkpoint that has no record (written by an older version)."""
    if not checkpoint:
        return 0.0, 0
    with open(os.path.join(checkpoint, "trainer_state.json"), encoding="utf-8") as handle:
        state = json.load(handle)
    record = (state.get("stateful_callbacks") or {}).get(RUN_LOSS_STATE) or {}
    loss_sum = (record.get("attributes") or {}).get("loss_sum")
    return (None if loss_sum is None else float(loss_sum)), int(state.get("global_step", 0))


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (`requires_grad`), detached and contiguous, by name."""
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


class ALLMRecTrainerMixin:
    """Trainable-only checkpoints and separately logged loss components (see the module docstring)."""

    loss_component_names: tuple[str, ...] = ()

    def _component_store(self) -> dict[str, list[float]]:
        if not hasattr(self, "_loss_components"):
            self._loss_components = defaultdict(list)
        return self._loss_components

    def record_loss_components(self, outputs) -> None:
        if not self.model.training:
            return
        store = self._component_store()
        for name in self.loss_component_names:
            value = outputs.get(name) if hasattr(outputs, "get") else None
            if value is not None:
                store[name].append(float(value.detach().float()))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        store = self._component_store()
        if "loss" in logs and store:
            for name, values in store.items():
                if values:
                    logs[name] = round(float(np.mean(values)), 6)
            store.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------ the run's loss
    # The Trainer's `train_loss` averages the steps run in this call only, so after a resume it describes part of
    # the run. Each checkpoint records the loss summed over the run so far; a resumed run adds its own to the sum
    # it resumed from and reports the whole run's mean (and `resumed_from_step`).
    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        from transformers.trainer_utils import get_last_checkpoint

        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        self._run_loss_before, prior_steps = saved_run_loss(checkpoint if isinstance(checkpoint, str) else None)
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        if not prior_steps:
            return output
        metrics = dict(output.metrics)
        metrics["resumed_from_step"] = prior_steps
        if self._run_loss_before is None:
            logger.warning(
                "%s has no record of the loss before step %d: train_loss averages steps %d-%d only "
                "(train_loss_from_step).", checkpoint, prior_steps, prior_steps + 1, output.global_step
            )  # fmt: skip
            metrics["train_loss_from_step"] = prior_steps + 1
            return output._replace(metrics=metrics)
        steps_now = output.global_step - prior_steps
        loss = (self._run_loss_before + output.training_loss * steps_now) / max(output.global_step, 1)
        metrics["train_loss"] = loss
        return output._replace(training_loss=loss, metrics=metrics)

    def _save_checkpoint(self, model, trial):
        this_call = getattr(self, "_total_loss_scalar", 0.0) + float(getattr(self, "_tr_loss", torch.zeros(())).item())
        before = getattr(self, "_run_loss_before", 0.0)
        loss_sum = None if before is None else before + this_call
        self.state.stateful_callbacks[RUN_LOSS_STATE] = {"args": {}, "attributes": {"loss_sum": loss_sum}}
        super()._save_checkpoint(model, trial)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _sharded(self) -> bool:
        # Under FSDP / DeepSpeed the parameters are sharded: the Trainer's own (full) checkpointing applies.
        return bool(getattr(self, "is_fsdp_enabled", False) or getattr(self, "is_deepspeed_enabled", False))

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if self._sharded():
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        save_file(trainable_state_dict(model), os.path.join(output_dir, TRAINABLE_WEIGHTS_NAME), {"format": "pt"})
        model.config.to_json_file(os.path.join(output_dir, "config.json"))
        with open(os.path.join(output_dir, TRAINING_ARGS_JSON), "w", encoding="utf-8") as fh:
            fh.write(self.args.to_json_string())
        logger.info("Saved the trainable weights to %s", output_dir)

    def _load_trainable(self, checkpoint: str, model: nn.Module | None = None) -> None:
        model = self.accelerator.unwrap_model(model if model is not None else self.model, keep_torch_compile=False)
        path = os.path.join(checkpoint, TRAINABLE_WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{checkpoint} has no {TRAINABLE_WEIGHTS_NAME}: it was not written by this trainer."
            )
        weights = load_file(path)
        expected = {name for name, p in model.named_parameters() if p.requires_grad}
        if set(weights) != expected:
            missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
            raise ValueError(
                f"{path} does not match the model's trainable parameters (missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}): resume with the same model and settings that wrote it."
            )
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                parameters[name].copy_(value.to(parameters[name].device, parameters[name].dtype))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        if not self._sharded() and os.path.isfile(os.path.join(resume_from_checkpoint, TRAINABLE_WEIGHTS_NAME)):
            self._load_trainable(resume_from_checkpoint, model)
        else:
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        checkpoint = self.state.best_model_checkpoint
        if checkpoint and not self._sharded() and os.path.isfile(os.path.join(checkpoint, TRAINABLE_WEIGHTS_NAME)):
            logger.info("Loading the best model from %s (score: %s).", checkpoint, self.state.best_metric)
            self._load_trainable(checkpoint)
        else:
            super()._load_best_model()


class CandidateEvaluationMixin:
    """`evaluate` as Hit@K / NDCG@K / MRR on the persisted candidate sets of `eval_dataset` (rows with `history`,
    `target`, `candidates`: a prepared dataset's validation split), through the subclass's `rank_candidates`, so
    early stopping and best-model loading can watch them (`metric_for_best_model="ndcg@10"`)."""

    eval_ks: tuple[int, ...] = (1, 5, 10)

    def score_candidate_rows(self, model, rows: dict, device) -> torch.Tensor:
        """Scores `(rows, candidates)` of a slice of the evaluation rows' `candidates` (the subclass's model)."""
        raise NotImplementedError

    @torch.no_grad()
    def scored_batches(self, dataset, score, batch_size: int | None = None):
        """Yields `(target_positions, score(model, rows, device))` for consecutive slices of `dataset`'s rows, the
        unwrapped model in eval mode (put back as it was afterwards)."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        batch_size = batch_size or self.args.per_device_eval_batch_size
        device = next(model.parameters()).device
        try:
            for start in range(0, len(dataset), batch_size):
                rows = dataset[start : start + batch_size]
                candidates = np.asarray(rows["candidates"], dtype=np.int64)
                positions = (candidates == np.asarray(rows["target"], dtype=np.int64)[:, None]).argmax(-1)
                yield positions, score(model, rows, device)
        finally:
            model.train(was_training)

    def rank_candidates(self, dataset, batch_size: int | None = None) -> np.ndarray:
        """The 0-based rank of each row's target among its persisted candidates, by `score_candidate_rows`."""
        ranks = [
            target_ranks(scores.float().cpu().numpy(), positions)
            for positions, scores in self.scored_batches(dataset, self.score_candidate_rows, batch_size)
        ]
        return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError(
                f"{type(self).__name__}.evaluate needs an eval_dataset (a prepared dataset's validation split)."
            )
        if "candidates" not in dataset.column_names:
            raise ValueError(
                "The evaluation rows have no 'candidates' column: prepare the dataset with negative sampling "
                "(the default) to evaluate on candidate sets."
            )
        ranks = self.rank_candidates(dataset)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in ranking_metrics(ranks, self.eval_ks).items()}
        self.log(metrics)
        if metric_key_prefix == "eval":  # early stopping and best-model tracking watch validation only
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class CFTrainer(CandidateEvaluationMixin, ALLMRecTrainerMixin, Trainer):
    """Pretrains a CF model (SASRec) with BCE on one sampled negative per position (use `CFCollator`), and
    evaluates Hit@K / NDCG@K on the persisted candidate sets of `eval_dataset` (rows with `history`, `target`,
    `candidates`: a prepared dataset's validation split).

    Example (see `examples/pretrain_cf.py` for the full script):

    ```python
    >>> trainer = CFTrainer(model=sasrec, args=TrainingArguments("out", eval_strategy="epoch"),  # doctest: +SKIP
    ...                     train_dataset=data.splits["train"], eval_dataset=data.splits["validation"],
    ...                     data_collator=CFCollator.for_config(sasrec.config, seed=0))
    ```
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def score_candidate_rows(self, model, rows: dict, device) -> torch.Tensor:
        """The CF model's scores of the rows' candidates, from their last `max_seq_length` history items."""
        histories = [list(h)[-model.config.max_seq_length :] for h in rows["history"]]
        candidates = torch.as_tensor(np.asarray(rows["candidates"], dtype=np.int64), device=device)
        return model.score_items(left_pad(histories).to(device), candidates)


class Stage1Trainer(ALLMRecTrainerMixin, Trainer):
    """Stage 1 (the aligner): the paper's four losses, logged separately; the CF encoder stays frozen and the
    sentence encoder fine-tunes. Use `Stage1Collator`."""

    loss_component_names = (
        "matching_loss",
        "item_reconstruction_loss",
        "text_reconstruction_loss",
        "recommendation_loss",
        "uniformity_loss",
    )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        self.record_loss_components(outputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss = model(**inputs).loss.detach()
        return loss, None, None


class Stage2Trainer(ALLMRecTrainerMixin, Trainer):
    """Stage 2: only the projectors train (the LM, CF encoder and aligner are frozen); next-token loss on the
    answer. Use `Stage2Collator` (a fresh candidate set per example). Set `bf16=True` where the hardware has it.

    On CPU it hands freed memory back to the system whenever the process has grown by more than
    `release_freed_memory_after_gb` (2 GB) since its first step (`ReleaseFreedMemoryCallback`; glibc's heap otherwise
    grows with every batch of a new prompt length); `None` turns it off."""

    def __init__(self, *args, release_freed_memory_after_gb: float | None = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        if release_freed_memory_after_gb is not None:
            self.add_callback(ReleaseFreedMemoryCallback(release_freed_memory_after_gb))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = model(**inputs).loss.detach()
        return loss, None, None


class RankingTrainer(CandidateEvaluationMixin, Stage2Trainer):
    """Trains the ranking head (`ALLMRecForItemRanking`) in stage 2's place: cross-entropy of every output token's
    next item over the whole catalog (or over sampled negatives), plus the distillation and uniformity terms the
    config switches on, each logged separately; `evaluate` ranks the persisted validation candidates with one LM
    forward per user (Hit@K / NDCG@K / MRR), for early stopping and best-model loading. Use `RankingCollator`
    and pass the processor (`processor=`), which builds the evaluation prompts.

    Example (see `examples/train_ranking_head.py` for the full script):

    ```python
    >>> trainer = RankingTrainer(  # doctest: +SKIP
    ...     model=model, args=RankingTrainingArguments("out"), processor=processor,
    ...     train_dataset=data.splits["train"], eval_dataset=data.splits["validation"],
    ...     data_collator=RankingCollator(processor, data.num_items))
    ```
    """

    loss_component_names = ("ranking_loss", "distillation_loss", "uniformity_loss")

    def __init__(self, *args, processor=None, **kwargs):
        if processor is None:
            raise ValueError("RankingTrainer needs the processor (processor=...): it builds the evaluation prompts.")
        super().__init__(*args, **kwargs)
        self.ranking_processor = processor

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        self.record_loss_components(outputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _candidate_inputs(self, rows: dict, device) -> dict[str, torch.Tensor]:
        """The rows' prompts and persisted candidates as model inputs on `device`."""
        batch = self.ranking_processor.ranking_inputs([list(h) for h in rows["history"]])
        candidates = torch.as_tensor(np.asarray(rows["candidates"], dtype=np.int64), device=device)
        return {**{key: v.to(device) for key, v in batch.items()}, "candidate_ids": candidates}

    def score_candidate_rows(self, model, rows: dict, device) -> torch.Tensor:
        """The ranking head's scores of the rows' candidates: one LM forward per user."""
        return model.score_candidates(**self._candidate_inputs(rows, device))

    def _score_parts(self, model, rows: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = model(**self._candidate_inputs(rows, device), cf_score_weight=0.0, output_cf_scores=True)
        return outputs.scores, outputs.cf_scores

    def candidate_score_parts(self, dataset, batch_size: int | None = None) -> tuple[np.ndarray, ...]:
        """The pure head's scores and the CF model's own scores of each row's persisted candidates (both
        `(rows, candidates)`, from one LM forward per user) and each row's target column `(rows,)`: what
        `choose_cf_score_weight` and the fused metrics are computed from."""
        head, cf, positions = [], [], []
        for target_positions, (head_scores, cf_scores) in self.scored_batches(dataset, self._score_parts, batch_size):
            head.append(head_scores.float().cpu().numpy())
            cf.append(cf_scores.float().cpu().numpy())
            positions.append(target_positions)
        if not positions:
            raise ValueError("no evaluation rows to score.")
        return np.concatenate(head), np.concatenate(cf), np.concatenate(positions)


def write_json(path: str, payload) -> None:
    """Write JSON atomically (to a temporary file, then rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
