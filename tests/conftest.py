"""Tiny real components for the tests: a BPE tokenizer trained on the fly, a catalog, and tiny configs of
several causal-LM families (hidden 32, 2 layers)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    OPTConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from allmrec_hf import (  # noqa: E402
    ALLMRecAlignerConfig,
    ALLMRecConfig,
    ALLMRecForConditionalGeneration,
    ALLMRecProcessor,
    ItemCatalog,
    SASRecConfig,
)

NUM_ITEMS = 30
HIDDEN = 32
WORDS = "red blue green dark night river stone city love war star road king moon time game house".split()


def make_titles(n: int = NUM_ITEMS) -> list[str]:
    return [f"{WORDS[i % len(WORDS)].title()} {WORDS[(3 * i + 1) % len(WORDS)]} {1990 + i}" for i in range(n)]


def make_catalog(n: int = NUM_ITEMS) -> ItemCatalog:
    return ItemCatalog(
        make_titles(n),
        item_ids=[f"m{i}" for i in range(1, n + 1)],
        fields={"description": [f"a film about {WORDS[i % len(WORDS)]}" if i % 3 else None for i in range(n)]},
    )


def make_tokenizer() -> PreTrainedTokenizerFast:
    corpus = (
        make_titles()
        + [
            "is a user representation. This user has watched in the previous. Recommend one next movie for this "
            'user to watch next from the following movie title set, . The recommendation is nothing yet " , '
            "a film about game play played item buy bought"
        ]
        * 3
    )
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is much faster than two contended ones, and results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A tokenizer trained once per session; each test gets a fresh copy (placeholders get added to it).
_TOKENIZER_DIR: list[str] = []


@pytest.fixture
def tokenizer(tmp_path_factory):
    if not _TOKENIZER_DIR:
        path = tmp_path_factory.mktemp("tokenizer")
        make_tokenizer().save_pretrained(path)
        _TOKENIZER_DIR.append(str(path))
    return PreTrainedTokenizerFast.from_pretrained(_TOKENIZER_DIR[0])


@pytest.fixture
def catalog() -> ItemCatalog:
    return make_catalog()


@pytest.fixture
def processor(tokenizer, catalog) -> ALLMRecProcessor:
    return ALLMRecProcessor(tokenizer, tokenizer, catalog)


def lm_config(family: str, vocab_size: int):
    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    if family == "llama":
        return LlamaConfig(
            hidden_size=HIDDEN,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            **common,
        )
    if family == "gpt2":
        return GPT2Config(n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=512, **common)
    if family == "opt":
        return OPTConfig(
            hidden_size=HIDDEN,
            ffn_dim=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            word_embed_proj_dim=HIDDEN,
            max_position_embeddings=512,
            **common,
        )
    if family == "qwen2":
        return Qwen2Config(
            hidden_size=HIDDEN,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            **common,
        )
    if family == "gemma3":
        return Gemma3TextConfig(
            hidden_size=HIDDEN,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            sliding_window=16,
            layer_types=["sliding_attention", "full_attention"],
            **common,
        )
    raise ValueError(family)


LM_FAMILIES = ["llama", "gpt2", "opt", "qwen2", "gemma3"]


def aligner_config(vocab_size: int, num_items: int = NUM_ITEMS) -> ALLMRecAlignerConfig:
    return ALLMRecAlignerConfig(
        cf_config=SASRecConfig(
            num_items=num_items, hidden_size=HIDDEN, hidden_dropout_prob=0.2, attention_dropout_prob=0.2
        ),
        text_encoder_config=BertConfig(
            vocab_size=vocab_size,
            hidden_size=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=256,
        ),
        latent_size=16,
    )


def build_model(family: str, processor: ALLMRecProcessor, seed: int = 0) -> ALLMRecForConditionalGeneration:
    torch.manual_seed(seed)
    base_vocab = processor.tokenizer.vocab_size  # the LM's vocabulary, without the added placeholders
    config = ALLMRecConfig(
        aligner_config=aligner_config(len(processor.text_encoder_tokenizer)),
        text_config=lm_config(family, base_vocab),
        base_model_name_or_path=None,
        **processor.placeholder_token_ids,
    )
    return ALLMRecForConditionalGeneration(config).eval()


@pytest.fixture(params=LM_FAMILIES)
def family(request) -> str:
    return request.param


# ================================================================================ training (session-scoped)
# A tiny prepared dataset, a tiny sentence encoder and tiny LMs saved to folders, and the CF and stage-1 runs of
# the example scripts, shared by tests/test_training_*.py (built on first use).


@pytest.fixture(scope="session")
def training_root(tmp_path_factory):
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="session")
def tiny_dataset(training_root) -> str:
    from training_helpers import write_dataset

    return write_dataset(training_root / "data")


@pytest.fixture(scope="session")
def text_encoder_dir(training_root) -> str:
    from training_helpers import write_text_encoder

    return write_text_encoder(training_root / "text_encoder", make_tokenizer())


@pytest.fixture(scope="session")
def lm_dir(training_root):
    """`lm_dir(family)`: the folder of a tiny random causal LM of that family with the tiny tokenizer."""
    from training_helpers import write_language_model

    folders: dict[str, str] = {}

    def get(family: str = "llama") -> str:
        if family not in folders:
            folders[family] = write_language_model(training_root / f"lm_{family}", family, make_tokenizer(), lm_config)
        return folders[family]

    return get


@pytest.fixture(scope="session")
def cf_run(tiny_dataset, training_root):
    """`examples/pretrain_cf.py` on the tiny dataset (evaluated and checkpointed every epoch, best kept)."""
    from training_helpers import CF_ARGS, run_example

    return run_example(
        "pretrain_cf",
        ["--dataset_dir", tiny_dataset, "--output_dir", str(training_root / "cf"), *CF_ARGS]
        + ["--num_train_epochs", "20", "--per_device_train_batch_size", "8", "--learning_rate", "1e-2"],
    )


@pytest.fixture(scope="session")
def stage1_run(cf_run, tiny_dataset, text_encoder_dir, training_root):
    """`examples/train_stage1.py` from the CF checkpoint (15 epochs of 2 steps, components logged every 2)."""
    from training_helpers import run_example

    return run_example(
        "train_stage1",
        [
            "--dataset_dir",
            tiny_dataset,
            "--output_dir",
            str(training_root / "stage1"),
            "--cf_model_path",
            cf_run.output_dir,
        ]
        + ["--text_encoder", text_encoder_dir, "--latent_size", "16", "--item_text_max_length", "16"]
        + ["--num_train_epochs", "15", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3"]
        + ["--logging_steps", "2", "--save_strategy", "no"],
    )


# The stage-2 runs evaluated by tests/test_evaluate_example.py and the benchmark smoke tests: A-LLMRec and the
# paper's two baselines, on the tiny llama LM with 3-item candidate sets.
EVAL_STAGE2_ARGS = ["--num_candidates", "3", "--prompt_history_length", "5", "--per_device_train_batch_size", "4"]
EVAL_STAGE2_ARGS += ["--learning_rate", "3e-2", "--save_strategy", "no", "--max_steps", "20"]


@pytest.fixture(scope="session")
def stage2_runs(cf_run, stage1_run, tiny_dataset, lm_dir, training_root) -> dict:
    """`{"a-llmrec": Run, "mlp_llm": Run, "llm_only": Run}` of `examples/train_stage2.py` on the tiny data."""
    from training_helpers import run_example

    runs = {}
    for name, extra in [
        ("a-llmrec", ["--stage1_model_path", stage1_run.output_dir]),
        ("mlp_llm", ["--baseline", "mlp_llm", "--cf_model_path", cf_run.output_dir]),
        ("llm_only", ["--baseline", "llm_only", "--cf_model_path", cf_run.output_dir]),
    ]:
        output = str(training_root / f"eval_stage2_{name}")
        runs[name] = run_example(
            "train_stage2",
            ["--dataset_dir", tiny_dataset, "--llm", lm_dir("llama"), "--output_dir", output, *extra]
            + EVAL_STAGE2_ARGS,
        )
    return runs


@pytest.fixture(scope="session")
def ranking_run(cf_run, tiny_dataset, lm_dir, training_root):
    """The script from the CF checkpoint: 16 users, batch 4, 4 epochs, evaluated and checkpointed every epoch."""
    from training_helpers import ranking_command, run_example

    output = training_root / "ranking_head"
    command = ranking_command(tiny_dataset, lm_dir("llama"), output, ["--cf_model_path", cf_run.output_dir])
    return run_example("train_ranking_head", command)
