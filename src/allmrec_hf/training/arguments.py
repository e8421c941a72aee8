"""Argument dataclasses of the training scripts (parsed with `transformers.HfArgumentParser`, also from one JSON
file). Each stage's `TrainingArguments` subclass only changes defaults, to the paper's settings; every one can be
overridden on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..configuration_allmrec import LATENT_ACTIVATIONS
from ..processing_allmrec import PromptTemplate


def bf16_available() -> bool:
    """bf16 autocast pays off on GPUs that support it; on CPUs it is opt-in (`--bf16 true`)."""
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


@dataclass
class DataArguments:
    dataset_dir: str = field(
        default="outputs/data/ml-100k", metadata={"help": "A prepared dataset (examples/prepare_data.py)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N training users only (for quick runs)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N users only."})
    few_shot_users: int | None = field(
        default=None, metadata={"help": "Few-shot training: K users (the dataset's persisted selection if any)."}
    )


@dataclass
class CFModelArguments:
    cf_model: str = field(
        default="sasrec",
        metadata={"help": "CF backbone: sasrec, gru4rec, nextitnet (or one registered with register_cf_model)."},
    )
    hidden_size: int = field(default=50, metadata={"help": "Item embedding / hidden size (paper: 50)."})
    max_length: int = field(default=50, metadata={"help": "Maximum history length (paper: 50)."})
    num_hidden_layers: int | None = field(
        default=None,
        metadata={"help": "SASRec blocks (default 2, the paper's), GRU4Rec GRU layers (1), NextItNet blocks (4)."},
    )
    num_attention_heads: int | None = field(
        default=None, metadata={"help": "SASRec attention heads (default 1, the paper's); other backbones have none."}
    )
    dropout: float | None = field(
        default=None,
        metadata={"help": "Dropout (default: the backbone's: SASRec 0.5 as in the paper, GRU4Rec 0.3, NextItNet 0)."},
    )
    cf_config_kwargs: str | None = field(
        default=None,
        metadata={
            "help": "Further fields of the backbone's config as a JSON object, e.g. "
            "'{\"dilations\": [1, 2, 4, 8]}' for nextitnet or '{\"gru_hidden_size\": 100}' for gru4rec."
        },
    )
    early_stopping_patience: int | None = field(
        default=20, metadata={"help": "Stop after this many evaluations without a better NDCG@10 (None: never)."}
    )


@dataclass
class Stage1ModelArguments:
    cf_model_path: str = field(default="outputs/cf", metadata={"help": "The pretrained CF checkpoint."})
    text_encoder: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Sentence encoder (Hub id, resolved to its offline copy when there is one, or a folder)."},
    )
    latent_size: int = field(default=128, metadata={"help": "Joint latent size (paper: 128)."})
    alpha: float = field(default=0.5, metadata={"help": "Weight of the item reconstruction loss (paper: 0.5)."})
    beta: float = field(default=0.5, metadata={"help": "Weight of the text reconstruction loss (paper: 0.5)."})
    latent_activation: str = field(
        default="sigmoid",
        metadata={
            "help": "How the item and text encoders end: 'sigmoid' (the paper's) or 'normalize' (L2, latents on the "
            "unit sphere; with --uniformity_weight they stay apart).",
            "choices": list(LATENT_ACTIVATIONS),
        },
    )
    uniformity_weight: float = field(
        default=0.0, metadata={"help": "Weight of a uniformity term on the batch's item and text latents (paper: 0)."}
    )
    all_positions: bool = field(
        default=False, metadata={"help": "Train on every position instead of the last item only (paper: last)."}
    )
    item_text_template: str = field(
        default="{title}, {description}", metadata={"help": "Item text for the sentence encoder, from catalog fields."}
    )
    item_text_max_length: int = field(default=128, metadata={"help": "Sentence-encoder tokens per item text."})


@dataclass
class Stage2ModelArguments:
    stage1_model_path: str | None = field(
        default="outputs/stage1", metadata={"help": "The stage-1 checkpoint (not needed for --baseline mlp_llm)."}
    )
    cf_model_path: str | None = field(
        default=None, metadata={"help": "The CF checkpoint, for --baseline mlp_llm (projectors on raw CF embeddings)."}
    )
    llm: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        metadata={
            "help": "The frozen causal LM (Hub id, resolved to its offline copy when there is one, or a folder)."
        },
    )
    baseline: str | None = field(
        default=None,
        metadata={
            "help": "None (A-LLMRec), 'mlp_llm' (no stage 1) or 'llm_only' (the prompt without embeddings; nothing "
            "trains)."
        },
    )
    num_candidates: int = field(default=20, metadata={"help": "Candidates per training prompt (paper: 20)."})
    max_history_length: int = field(default=50, metadata={"help": "History items given to the CF encoder."})
    prompt_history_length: int = field(default=10, metadata={"help": "History titles shown in the prompt."})
    noun: str = field(default="movie", metadata={"help": "The domain's noun in the prompt (movie, game, item...)."})
    verb: str = field(default="watch", metadata={"help": "The prompt's verb (watch, play, buy...)."})
    past_verb: str = field(default="watched", metadata={"help": "Its past tense (watched, played, bought...)."})
    lm_dtype: str | None = field(
        default=None,
        metadata={
            "help": "The frozen LM's dtype: auto (bfloat16 where it runs natively, else float32), bfloat16, "
            "float32; default: the LM's own."
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "The LM's attention (eager, sdpa, causal_blocks, ...); on CPU, causal_blocks (allmrec_hf's) "
            "trains fastest, compiled or not (see benchmarks/)."
        },
    )
    compile_language_model: bool = field(
        default=False,
        metadata={"help": "torch.compile the frozen LM's decoder (fuses its elementwise work; compiles first)."},
    )
    compile_backend: str = field(default="inductor", metadata={"help": "torch.compile backend for the LM."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the LM (0: off, the paper's frozen LM)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_target_modules: str = field(default="q_proj,v_proj", metadata={"help": "Comma-separated LoRA targets."})


@dataclass
class RankingModelArguments:
    cf_model_path: str | None = field(
        default="outputs/cf", metadata={"help": "The CF checkpoint (its item embeddings feed the heads)."}
    )
    stage1_model_path: str | None = field(
        default=None,
        metadata={
            "help": "A stage-1 checkpoint instead: its aligner's latents feed the projectors (and the item "
            "head with --item_head_input joint / text)."
        },
    )
    llm: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        metadata={
            "help": "The frozen causal LM (Hub id, resolved to its offline copy when there is one, or a folder)."
        },
    )
    ranking_history_length: int = field(
        default=50, metadata={"help": "History items the prompt shows, each with an output token that trains."}
    )
    max_history_length: int = field(default=50, metadata={"help": "History items given to the CF encoder."})
    cut_points: int = field(
        default=2,
        metadata={"help": "Training cut points per user: the last, then earlier ones ranking_history_length apart."},
    )
    num_negatives: int = field(
        default=0, metadata={"help": "Sampled negatives per output token (0: softmax over the whole catalog)."}
    )
    item_head_input: str = field(default="cf", metadata={"help": "What the item head reads: cf, joint or text."})
    ranking_hidden_size: int = field(default=128, metadata={"help": "Size of the scored user and item vectors."})
    distillation_weight: float = field(default=0.0, metadata={"help": "LLM-SRec's distillation term (0: off)."})
    uniformity_weight: float = field(default=0.0, metadata={"help": "LLM-SRec's uniformity term (0: off)."})
    temperature: float = field(default=1.0, metadata={"help": "Scores are divided by it."})
    item_bias: bool = field(default=True, metadata={"help": "A learned per-item score offset."})
    cf_skip: bool = field(
        default=False,
        metadata={
            "help": "The user vector adds a learned linear map of the CF user state (a skip around the LM). "
            "Measured worse on ML-100k (test Hit@1 .4624 against .4910 without it): an ablation."
        },
    )
    cf_score_weight: str = field(
        default="0",
        metadata={
            "help": "Add this weight times the CF model's own item scores to the head's (a late fusion; the head "
            "trains without it): 'auto' chooses it on validation NDCG@10 after training (the pure head is "
            "reported beside it), a number fixes it, 0 is the pure head."
        },
    )
    lm_num_layers: int | None = field(
        default=None,
        metadata={
            "help": "Run only the LM's first N decoder layers and read the output token there (the rest are not "
            "loaded; a forward costs about N / all of the whole LM's). Default: every layer."
        },
    )
    no_user_representation: bool = field(
        default=False, metadata={"help": "Ablation: the output token carries no projected CF user state."}
    )
    history_titles: bool = field(
        default=False,
        metadata={
            "help": "The prompt also names each history item (--ranking_item_text). Off by default: on ML-100k the "
            "titled prompt (about 3 times as long) ranked worse, e.g. test Hit@1 .4634 against .4889 at 20 items."
        },
    )
    no_history_embeddings: bool = field(
        default=False, metadata={"help": "Ablation (with --history_titles): titles without item embeddings."}
    )
    past_verb: str = field(default="watched", metadata={"help": "The prompt's verb (watched, played, bought...)."})
    ranking_item_text: str = field(
        default="{title}",
        metadata={
            "help": "With --history_titles, how the prompt names each history item, from the catalog's fields: "
            "'{title}' (default), or e.g. '{title}, {genres}' to show MovieLens genres too."
        },
    )
    lm_dtype: str | None = field(
        default=None,
        metadata={
            "help": "The frozen LM's dtype: auto (bfloat16 where it runs natively, else float32), bfloat16, "
            "float32; default: the LM's own."
        },
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "The LM's attention (eager, sdpa, ...)."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the LM (0: off, the frozen LM)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_target_modules: str = field(default="q_proj,v_proj", metadata={"help": "Comma-separated LoRA targets."})
    early_stopping_patience: int | None = field(
        default=2, metadata={"help": "Stop after this many evaluations without a better NDCG@10 (None: never)."}
    )

    def __post_init__(self):
        self.fixed_cf_score_weight()  # a bad value is refused before anything loads
        if self.lm_num_layers is not None and self.lm_num_layers < 1:
            raise ValueError(f"--lm_num_layers must be a positive number of decoder layers, got {self.lm_num_layers}.")
        if self.no_history_embeddings and not self.history_titles:
            raise ValueError(
                "--no_history_embeddings without --history_titles would show nothing of the history items: "
                "add --history_titles."
            )
        if self.ranking_item_text != "{title}" and not self.history_titles:
            raise ValueError(
                f"--ranking_item_text {self.ranking_item_text!r} sets how history items are named, but the prompt "
                "names none without --history_titles: add it."
            )

    def prompt_template(self) -> PromptTemplate:
        """The ranking prompt these arguments ask for: item embeddings, with titles on request (or titles alone)."""
        words = {
            "past_verb": self.past_verb,
            "ranking_history_length": self.ranking_history_length,
            "ranking_item_text": self.ranking_item_text,
        }
        if self.no_history_embeddings:
            return PromptTemplate.without_embeddings(**words)
        if self.history_titles:
            return PromptTemplate.with_titles(**words)
        return PromptTemplate.without_titles(**words)

    def fixed_cf_score_weight(self) -> float | None:
        """`--cf_score_weight` as a number, or None for 'auto' (chosen on validation after training)."""
        value = str(self.cf_score_weight).strip().lower()
        if value == "auto":
            return None
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not 0 <= weight < float("inf"):
            raise ValueError(f"--cf_score_weight must be 'auto' or a finite number >= 0, got {self.cf_score_weight!r}.")
        return weight


@dataclass
class CFTrainingArguments(TrainingArguments):
    """SASRec pretraining defaults from the paper: Adam lr 1e-3 (betas 0.9/0.98), batch 128, up to 200 epochs,
    evaluated (Hit@10 / NDCG@10 on the validation candidates) and checkpointed every epoch, best model kept."""

    output_dir: str | None = field(default="outputs/cf", metadata={"help": "Where the CF checkpoint goes."})
    learning_rate: float = 1e-3
    adam_beta2: float = 0.98
    per_device_train_batch_size: int = 128
    per_device_eval_batch_size: int = 256
    num_train_epochs: float = 200.0
    lr_scheduler_type: str = "constant"
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    logging_strategy: str = "epoch"
    save_total_limit: int | None = 2
    load_best_model_at_end: bool = True
    metric_for_best_model: str | None = "ndcg@10"
    greater_is_better: bool | None = True
    remove_unused_columns: bool = False
    dataloader_pin_memory: bool = field(default_factory=torch.cuda.is_available)
    seed: int = 0


@dataclass
class Stage1TrainingArguments(TrainingArguments):
    """Stage-1 defaults from the paper: Adam lr 1e-4, batch 32, 10 epochs."""

    output_dir: str | None = field(default="outputs/stage1", metadata={"help": "Where the aligner goes."})
    learning_rate: float = 1e-4
    per_device_train_batch_size: int = 32
    num_train_epochs: float = 10.0
    lr_scheduler_type: str = "constant"
    save_strategy: str = "epoch"
    logging_steps: float = 10
    save_total_limit: int | None = 2
    remove_unused_columns: bool = False
    dataloader_pin_memory: bool = field(default_factory=torch.cuda.is_available)
    seed: int = 0


@dataclass
class Stage2TrainingArguments(TrainingArguments):
    """Stage-2 defaults from the paper: Adam lr 1e-4, batch 4, 5 epochs; bf16 autocast where the GPU has it."""

    output_dir: str | None = field(default="outputs/stage2", metadata={"help": "Where the recommender goes."})
    learning_rate: float = 1e-4
    per_device_train_batch_size: int = 4
    num_train_epochs: float = 5.0
    lr_scheduler_type: str = "constant"
    save_strategy: str = "steps"
    save_steps: float = 500
    logging_steps: float = 10
    save_total_limit: int | None = 2
    remove_unused_columns: bool = False
    train_sampling_strategy: str = "group_by_length"
    dataloader_pin_memory: bool = field(default_factory=torch.cuda.is_available)
    bf16: bool = field(default_factory=bf16_available, metadata={"help": "bf16 autocast (default: GPU has it)."})
    seed: int = 0


@dataclass
class RankingTrainingArguments(TrainingArguments):
    """Ranking-head defaults (measured on ML-100k: with 2 cut points per user they beat SASRec on all 943 test
    users, README "Training"): AdamW lr 1e-3 decaying linearly to 0 over 2 epochs, batch 8, evaluated (validation
    NDCG@10) and checkpointed every epoch, the best epoch kept. A constant rate peaked after one epoch and then
    fell (validation NDCG@10 .7353, .7294)."""

    output_dir: str | None = field(default="outputs/ranking_head", metadata={"help": "Where the recommender goes."})
    learning_rate: float = 1e-3
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    num_train_epochs: float = 2.0
    lr_scheduler_type: str = "linear"
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    logging_steps: float = 10
    save_total_limit: int | None = 2
    load_best_model_at_end: bool = True
    metric_for_best_model: str | None = "ndcg@10"
    greater_is_better: bool | None = True
    remove_unused_columns: bool = False
    dataloader_pin_memory: bool = field(default_factory=torch.cuda.is_available)
    bf16: bool = field(default_factory=bf16_available, metadata={"help": "bf16 autocast (default: GPU has it)."})
    seed: int = 0
