"""The other CF backbones (GRU4Rec, NextItNet) and the protocol for any CF model: shapes, causality, left-padding
invariance, cold users, losses and training, saving, the registries, a custom backbone plugged into both stages,
the whole tiny pipeline through the example scripts, and `trust_remote_code` loading of their checkpoints."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig, PreTrainedConfig, PreTrainedModel

from allmrec_hf import (
    ALLMRecAlignerConfig,
    ALLMRecAlignerModel,
    ALLMRecConfig,
    ALLMRecForConditionalGeneration,
    CFModel,
    GRU4RecConfig,
    GRU4RecModel,
    NextItNetConfig,
    NextItNetModel,
    SASRecConfig,
    SASRecModel,
    check_cf_model,
    register_cf_model,
)
from allmrec_hf.training import builders
from conftest import HIDDEN, lm_config
from training_helpers import CF_ARGS, example_module, run_example

NUM = 20
MAX_LEN = 8
BACKBONES = {"gru4rec": (GRU4RecConfig, GRU4RecModel), "nextitnet": (NextItNetConfig, NextItNetModel)}


def make_model(backbone: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config_class, model_class = BACKBONES[backbone]
    settings = dict(num_items=NUM, hidden_size=HIDDEN, num_hidden_layers=2, max_seq_length=MAX_LEN)
    settings.update(overrides)
    model = model_class(config_class(**settings)).eval()
    # Non-zero biases and norm parameters, so that padding and cold-user checks mean something.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "bias" in name:
                parameter.normal_(0.0, 0.3)
            elif "layer_norm" in name:
                parameter.uniform_(0.5, 1.5)
    return model


@pytest.fixture(params=list(BACKBONES))
def backbone(request) -> str:
    return request.param


@pytest.fixture
def model(backbone):
    return make_model(backbone)


# --------------------------------------------------------------------------------------------- shapes
def test_output_shapes_and_protocol(model):
    histories = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5]])
    output = model(histories)
    assert output.loss is None
    assert output.last_hidden_state.shape == (2, 5, HIDDEN)
    assert torch.equal(output.user_representation, output.last_hidden_state[:, -1])
    assert torch.equal(model.get_user_representation(histories), output.user_representation)
    assert isinstance(model(histories, return_dict=False), tuple)
    assert model(torch.randint(1, NUM + 1, (3, 20))).last_hidden_state.shape == (3, MAX_LEN, HIDDEN)
    assert model.get_item_embeddings().shape == (NUM + 1, HIDDEN)
    assert model.get_item_embeddings(torch.tensor([[1, 2, 3]])).shape == (1, 3, HIDDEN)
    assert model.get_input_embeddings() is model.item_embeddings
    assert torch.equal(model.item_embeddings.weight[0], torch.zeros(HIDDEN))
    assert isinstance(model, CFModel)
    check_cf_model(model)
    scores = model.score_all_items(histories)
    assert scores.shape == (2, NUM + 1) and (scores[:, 0] == float("-inf")).all()
    everything = torch.arange(1, NUM + 1).expand(2, -1)
    torch.testing.assert_close(scores[:, 1:], model.score_items(histories, everything), rtol=1e-5, atol=1e-6)
    users, table = model.get_user_representation(histories), model.get_item_embeddings()
    torch.testing.assert_close(
        model.score_items(histories, torch.tensor([[8], [9]]))[:, 0], (users * table[[8, 9]]).sum(-1)
    )


def test_gru4rec_projects_a_larger_state_to_the_embedding_size():
    model = make_model("gru4rec", gru_hidden_size=48)
    assert model.gru.hidden_size == 48 and isinstance(model.output_projection, nn.Linear)
    assert model.get_user_representation(torch.tensor([[0, 1, 2]])).shape == (1, HIDDEN)
    assert isinstance(make_model("gru4rec").output_projection, nn.Identity)


def test_nextitnet_dilations_and_receptive_field():
    config = NextItNetConfig(num_items=NUM, hidden_size=HIDDEN, num_hidden_layers=4)
    assert config.dilations == [1, 4, 1, 4] and config.receptive_field == 61  # covers the default 50 items
    model = make_model("nextitnet", num_hidden_layers=1, dilations=[1], max_seq_length=12)
    assert model.config.receptive_field == 7  # kernel 3, dilations 1 and 2
    assert [b.conv_1.conv.dilation[0] for b in model.blocks] == [1]
    assert [b.conv_2.conv.dilation[0] for b in model.blocks] == [2]
    base = torch.arange(1, 11)[None]
    reference = model.get_user_representation(base)
    too_far, in_reach = base.clone(), base.clone()
    too_far[0, 10 - 8] = 19  # 8 items back: outside the 7 the last position sees
    in_reach[0, 10 - 7] = 19
    torch.testing.assert_close(model.get_user_representation(too_far), reference, rtol=0, atol=1e-6)
    assert not torch.allclose(model.get_user_representation(in_reach), reference, atol=1e-4)


# --------------------------------------------------------------------------------------------- masking
def test_causal_masking(model):
    base = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    reference = model(base).last_hidden_state
    for changed_position in range(1, 7):
        changed = base.clone()
        changed[0, changed_position:] = torch.tensor([19, 18, 17, 16, 15, 14, 13])[: 7 - changed_position]
        hidden = model(changed).last_hidden_state
        earlier = slice(0, changed_position)
        torch.testing.assert_close(hidden[:, earlier], reference[:, earlier], rtol=0, atol=1e-6)
        assert not torch.allclose(hidden[:, changed_position], reference[:, changed_position], atol=1e-4)


def test_left_padding_invariance(model):
    items = [3, 5, 7, 11]
    reference = model(torch.tensor([items]))
    for pad in (1, 2, 4):
        padded = model(torch.tensor([[0] * pad + items]))
        torch.testing.assert_close(padded.user_representation, reference.user_representation, rtol=0, atol=1e-5)
        torch.testing.assert_close(padded.last_hidden_state[:, pad:], reference.last_hidden_state, rtol=0, atol=1e-5)
        assert torch.equal(padded.last_hidden_state[:, :pad], torch.zeros(1, pad, HIDDEN))
    batch = torch.tensor([[0, 0, 0] + items, [1, 2, 3, 4, 5, 6, 7]])
    users = model.get_user_representation(batch)
    torch.testing.assert_close(users[0], reference.user_representation[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(users[1], model.get_user_representation(batch[1:])[0], rtol=0, atol=1e-5)
    # the order of the items matters, the padding does not
    first = model.get_user_representation(torch.tensor([[0, 0, 4, 9]]))
    assert not torch.allclose(first, model.get_user_representation(torch.tensor([[0, 0, 9, 4]])), atol=1e-4)


def test_long_histories_keep_the_most_recent_items(model):
    torch.manual_seed(3)
    long = torch.randint(1, NUM + 1, (2, 13))
    changed = long.clone()
    changed[:, :5] = 1
    torch.testing.assert_close(model(changed).last_hidden_state, model(long[:, -MAX_LEN:]).last_hidden_state)


def test_cold_users_share_one_learned_representation(model):
    empty = model.get_user_representation(torch.zeros((3, 0), dtype=torch.long))
    all_padding = model.get_user_representation(torch.zeros((2, 5), dtype=torch.long))
    mixed = model.get_user_representation(torch.tensor([[0, 0, 0], [0, 4, 5]]))
    cold = empty[0]
    assert cold.abs().sum() > 0  # from the trained biases, not a zero vector
    for row in torch.cat([empty, all_padding, mixed[:1]]):
        torch.testing.assert_close(row, cold, rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed[1], model.get_user_representation(torch.tensor([[4, 5]]))[0], rtol=0, atol=1e-5)


def test_bad_inputs_raise(model):
    with pytest.raises(ValueError, match="history in row 0 ends with padding"):
        model(torch.tensor([[1, 2, 0]]))
    with pytest.raises(ValueError, match=f"history item id {NUM + 1} is outside the CF model's vocabulary"):
        model(torch.tensor([[1, NUM + 1]]))
    with pytest.raises(ValueError, match="loss_type='bce' needs negative_ids"):
        model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[2, 3, 4]]))


# --------------------------------------------------------------------------------------------- losses
def test_bce_and_ce_losses_are_sasrecs(backbone):
    """The loss is SASRec's, on this backbone's hidden states: BCE against the sampled negatives at every position
    with a label, or CE over the catalog."""
    inputs = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]])
    labels = torch.tensor([[0, 0, 2, 3, 4], [5, 6, 7, 8, 9]])
    negatives = torch.tensor([[7, 7, 7, 7, 7], [1, 1, 1, 1, 1]])
    model = make_model(backbone)
    hidden = model(inputs).last_hidden_state
    sasrec = SASRecModel(SASRecConfig(num_items=NUM, hidden_size=HIDDEN))
    sasrec.item_embeddings = model.item_embeddings
    loss = model(inputs, labels=labels, negative_ids=negatives).loss
    torch.testing.assert_close(loss, sasrec.compute_loss(hidden, labels, negatives))
    table, valid = model.get_item_embeddings(), labels != 0
    positive, negative = (hidden * table[labels]).sum(-1)[valid], (hidden * table[negatives]).sum(-1)[valid]
    expected = nn.functional.softplus(-positive).mean() + nn.functional.softplus(negative).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    ce = make_model(backbone, loss_type="ce")
    logits = ce(inputs).last_hidden_state @ ce.get_item_embeddings()[1:].T
    expected = nn.functional.cross_entropy(logits[valid], labels[valid] - 1)
    torch.testing.assert_close(ce(inputs, labels=labels).loss, expected, rtol=1e-5, atol=1e-6)


def planted_batch(batch_size: int = 32, seed: int = 0):
    """Sequences that always continue i -> i + 1 (wrapping), as inputs, next-item labels and negatives."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, NUM, (batch_size, 1), generator=generator)
    sequences = (starts + torch.arange(MAX_LEN + 1)) % NUM + 1
    labels = sequences[:, 1:]
    negatives = torch.randint(1, NUM + 1, labels.shape, generator=generator)
    return sequences[:, :-1], labels, torch.where(negatives == labels, negatives % NUM + 1, negatives)


def test_training_loss_decreases_and_learns_a_planted_pattern(backbone):
    model = make_model(backbone, hidden_dropout_prob=0.1)
    inputs, labels, negatives = planted_batch()
    with torch.no_grad():
        initial = model(inputs, labels=labels, negative_ids=negatives).loss.item()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    generator = torch.Generator().manual_seed(1)
    for _ in range(80):
        fresh = torch.randint(1, NUM + 1, labels.shape, generator=generator)
        loss = model(inputs, labels=labels, negative_ids=torch.where(fresh == labels, fresh % NUM + 1, fresh)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = model(inputs, labels=labels, negative_ids=negatives).loss.item()
        test_inputs, test_labels, _ = planted_batch(seed=1)
        predicted = model.score_all_items(test_inputs).argmax(-1)
    assert final < 0.5 * initial, (initial, final)
    assert (predicted == test_labels[:, -1]).float().mean() > 0.7  # chance is 1/20
    assert torch.equal(model.item_embeddings.weight[0], torch.zeros(HIDDEN))  # padding row never trained


# --------------------------------------------------------------------------------------------- saving, configs
def test_save_load_round_trip_and_auto_classes(model, backbone, tmp_path):
    model.save_pretrained(tmp_path)
    config_class, model_class = BACKBONES[backbone]
    assert {f"configuration_{backbone}.py", f"modeling_{backbone}.py", "modeling_cf_common.py"} <= set(
        os.listdir(tmp_path)
    )  # the model code travels with the checkpoint (trust_remote_code)
    histories = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5]])
    for loaded in (model_class.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert type(loaded) is model_class
        loaded.eval()
        assert torch.equal(loaded(histories).last_hidden_state, model(histories).last_hidden_state)
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name
    assert type(AutoConfig.for_model(backbone, num_items=9)) is config_class


@pytest.mark.parametrize(
    ("config_class", "kwargs", "message"),
    [
        (GRU4RecConfig, dict(num_items=0), "GRU4RecConfig.num_items must be a positive integer, got 0"),
        (GRU4RecConfig, dict(num_items=5, hidden_dropout_prob=1.0), "hidden_dropout_prob must be in [0, 1)"),
        (GRU4RecConfig, dict(num_items=5, gru_hidden_size=0), "gru_hidden_size must be a positive integer"),
        (GRU4RecConfig, dict(num_items=5, loss_type="mse"), "loss_type must be 'bce' or 'ce', got 'mse'"),
        (NextItNetConfig, dict(num_items=5, kernel_size=0), "kernel_size must be a positive integer"),
        (
            NextItNetConfig,
            dict(num_items=5, num_hidden_layers=3, dilations=[1, 2]),
            "dilations must be 3 positive integers (one per residual block, num_hidden_layers=3), got [1, 2]",
        ),
    ],
)
def test_config_validation(config_class, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        config_class(**kwargs)


def test_build_cf_model_takes_shared_settings_and_backbone_fields(caplog):
    with caplog.at_level("INFO", logger="allmrec_hf.training.builders"):
        model = builders.build_cf_model(
            "gru4rec", 12, hidden_size=16, num_hidden_layers=None, num_attention_heads=2, hidden_dropout_prob=0.1,
            config_kwargs={"gru_hidden_size": 24},
        )  # fmt: skip
    assert type(model) is GRU4RecModel and model.config.num_items == 12
    assert (model.config.hidden_size, model.config.gru_hidden_size) == (16, 24)
    assert model.config.num_hidden_layers == 1 and model.config.hidden_dropout_prob == 0.1  # default, given
    assert "GRU4RecConfig has no num_attention_heads: ignored" in caplog.text
    assert builders.build_cf_model("nextitnet", 12, config_kwargs={"dilations": [1, 2]}).config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="NextItNetConfig has no field.s. heads"):
        builders.build_cf_model("nextitnet", 12, config_kwargs={"heads": 2})
    with pytest.raises(ValueError, match="Unknown CF model 'gru4recc'; choose one of sasrec, gru4rec, nextitnet"):
        builders.build_cf_model("gru4recc", 12)


def test_unknown_backbones_are_named_with_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="Unknown CF model_type 'bert4rec': the CF backbones shipped are sasrec, gru"):
        ALLMRecAlignerConfig(cf_config={"model_type": "bert4rec", "num_items": 5})
    with pytest.raises(ValueError, match="Unknown --cf_model 'caser'; choose one of sasrec, gru4rec, nextitnet"):
        example_module("pretrain_cf").main(["--cf_model", "caser", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="--cf_model must be one of sasrec, gru4rec, nextitnet, got 'caser'"):
        example_module("quickstart").main(["--cf_model", "caser", "--output_dir", str(tmp_path)])


# --------------------------------------------------------------------------------------------- a custom backbone
class MeanCFConfig(PreTrainedConfig):
    model_type = "test_mean_cf"

    def __init__(self, num_items: int = 1, hidden_size: int = 8, max_seq_length: int = 50, **kwargs):
        self.num_items, self.hidden_size, self.max_seq_length = num_items, hidden_size, max_seq_length
        super().__init__(**kwargs)


class MeanCFModel(PreTrainedModel):
    """The smallest CF model: a user is the running mean of their items' embeddings. It implements the `CFModel`
    protocol directly (no mixin), to show what A-LLMRec needs."""

    config_class = MeanCFConfig

    def __init__(self, config: MeanCFConfig):
        super().__init__(config)
        self.items = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.post_init()

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        input_ids = input_ids[:, -self.config.max_seq_length :]
        counts = (input_ids != 0).cumsum(1).clamp(min=1).unsqueeze(-1)
        return self.items(input_ids).cumsum(1) / counts

    def get_user_representation(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encode(input_ids)[:, -1]

    def get_item_embeddings(self, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.items.weight if item_ids is None else self.items(item_ids)

    def score_items(self, input_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bcd->bc", self.get_user_representation(input_ids), self.items(item_ids))

    def score_all_items(self, input_ids: torch.Tensor) -> torch.Tensor:
        scores = self.get_user_representation(input_ids) @ self.items.weight.T
        scores[:, 0] = float("-inf")
        return scores


@pytest.fixture
def restored_registries(monkeypatch):
    """The package's CF registries, restored after the test (what `register_cf_model` adds to is a copy)."""
    from allmrec_hf import model_card

    for module, name in [(builders, "CF_MODEL_TYPES"), (builders, "STAGE_OF_MODEL_TYPE")] + [
        (model_card, n) for n in ("CF_NAMES", "CF_CLASSES", "KIND_OF_MODEL_TYPE")
    ]:
        monkeypatch.setattr(module, name, dict(getattr(module, name)))
    return model_card


@pytest.fixture
def mean_cf_registered(restored_registries):
    """`register_cf_model(MeanCFConfig, MeanCFModel)` for one test."""
    register_cf_model(MeanCFConfig, MeanCFModel, display_name="MeanCF")
    return restored_registries


def test_the_protocol_modules_example_runs(restored_registries):
    from doctest_helpers import OPTIONS, FencedDocTestParser

    module = importlib.import_module("allmrec_hf.cf_models")
    tests = doctest.DocTestFinder(parser=FencedDocTestParser(), exclude_empty=True).find(module, "cf_models")
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).attempted > 5 and runner.summarize(verbose=False).failed == 0
    assert builders.CF_MODEL_TYPES["doc_mean_cf"][1].__name__ == "MeanCFModel"


def test_a_custom_cf_model_plugs_into_both_stages(mean_cf_registered, processor, tmp_path):
    model_card = mean_cf_registered
    assert builders.CF_MODEL_TYPES["test_mean_cf"] == (MeanCFConfig, MeanCFModel)
    assert model_card.CF_NAMES["test_mean_cf"] == "MeanCF" and model_card.KIND_OF_MODEL_TYPE["test_mean_cf"] == "cf"
    assert type(builders.build_cf_model("test_mean_cf", 30, hidden_size=HIDDEN, num_hidden_layers=2)) is MeanCFModel
    register_cf_model(MeanCFConfig, MeanCFModel, display_name="MeanCF")  # again: nothing changes

    torch.manual_seed(0)
    cf_model = MeanCFModel(MeanCFConfig(num_items=30, hidden_size=HIDDEN))
    assert isinstance(cf_model, CFModel)
    text_config = BertConfig(
        vocab_size=len(processor.text_encoder_tokenizer), hidden_size=HIDDEN, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=37, max_position_embeddings=256,
    )  # fmt: skip
    # stage 1: the aligner builds the custom model from its config (through AutoModel) and trains around it
    aligner_config = ALLMRecAlignerConfig(cf_config=cf_model.config, text_encoder_config=text_config, latent_size=16)
    aligner = ALLMRecAlignerModel(aligner_config)
    assert type(aligner.cf_model) is MeanCFModel
    aligner.set_cf_model(cf_model)
    histories = [[1, 2, 3, 4], [5, 6, 7, 8]]
    texts = processor.tokenize_item_texts([5, 9, 20, 21])
    ids, mask = texts["input_ids"].view(2, 2, 1, -1), texts["attention_mask"].view(2, 2, 1, -1)
    output = aligner(
        cf_input_ids=processor(histories=histories)["cf_input_ids"],
        positive_ids=torch.tensor([[5], [9]]), negative_ids=torch.tensor([[20], [21]]),
        positive_text_input_ids=ids[:, 0], positive_text_attention_mask=mask[:, 0],
        negative_text_input_ids=ids[:, 1], negative_text_attention_mask=mask[:, 1],
    )  # fmt: skip
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert all(p.grad is None for p in aligner.cf_model.parameters())  # frozen
    assert aligner.item_encoder[0].weight.grad is not None

    # stage 2: the user representation and the item embeddings reach the LM; candidates are scored
    config = ALLMRecConfig(
        aligner_config=aligner.config,
        text_config=lm_config("llama", processor.tokenizer.vocab_size),
        **processor.placeholder_token_ids,
    )
    model = ALLMRecForConditionalGeneration(config).eval()
    model.recommender.load_state_dict(aligner.state_dict())
    assert type(model.cf_model) is MeanCFModel
    batch = processor(histories=histories, candidates=[[4, 5, 6], [9, 10, 11]], targets=[5, 9])
    keys = ("input_ids", "attention_mask", "cf_input_ids", "item_ids", "labels")
    out = model(**{k: batch[k] for k in keys})
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(
        out.user_features, model.user_projector(cf_model.get_user_representation(batch["cf_input_ids"]))
    )
    query = processor(histories=histories, candidates=[[4, 5, 6], [9, 10, 11]])
    scores = model.score_candidates(**query)
    assert scores.shape == (2, 3) and torch.isfinite(scores).all()

    # and a checkpoint holding it loads back (in a process that registered the backbone)
    model.save_pretrained(tmp_path / "checkpoint", include_language_model=True)
    saved = json.loads((tmp_path / "checkpoint" / "config.json").read_text())
    assert saved["aligner_config"]["cf_config"]["model_type"] == "test_mean_cf"
    loaded = ALLMRecForConditionalGeneration.from_pretrained(tmp_path / "checkpoint").eval()
    assert type(loaded.cf_model) is MeanCFModel
    torch.testing.assert_close(loaded.score_candidates(**query), scores)


def test_register_cf_model_checks_what_it_is_given(mean_cf_registered):
    class NotACFModel(PreTrainedModel):
        config_class = MeanCFConfig

        def encode(self, input_ids):
            return input_ids

    with pytest.raises(TypeError, match="NotACFModel is not a CF model: it has no get_user_representation, get_item"):
        register_cf_model(MeanCFConfig, NotACFModel)
    with pytest.raises(ValueError, match="'sasrec' is a shipped CF backbone"):
        register_cf_model(SASRecConfig, SASRecModel)
    with pytest.raises(TypeError, match="config_class must be a PreTrainedConfig subclass"):
        register_cf_model(dict, MeanCFModel)
    with pytest.raises(TypeError, match="PreTrainedConfig is not a CF config: it has no num_items, hidden_size"):
        check_cf_model(MeanCFModel(MeanCFConfig()), PreTrainedConfig())


# --------------------------------------------------------------------------------------------- the whole pipeline
@pytest.fixture(scope="module")
def pipelines(tiny_dataset, text_encoder_dir, lm_dir, tmp_path_factory):
    """pretrain_cf -> train_stage1 -> train_stage2 -> evaluate, through the example scripts, on each backbone."""
    root = tmp_path_factory.mktemp("cf_backbones")
    runs = {}
    for backbone in BACKBONES:
        out = root / backbone
        cf = run_example(
            "pretrain_cf",
            ["--dataset_dir", tiny_dataset, "--output_dir", str(out / "cf"), "--cf_model", backbone, *CF_ARGS]
            + ["--num_train_epochs", "3", "--per_device_train_batch_size", "8", "--learning_rate", "1e-2"],
        )
        stage1 = run_example(
            "train_stage1",
            ["--dataset_dir", tiny_dataset, "--output_dir", str(out / "stage1"), "--cf_model_path", cf.output_dir]
            + ["--text_encoder", text_encoder_dir, "--latent_size", "16", "--item_text_max_length", "16"]
            + ["--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--save_strategy", "no"],
        )
        stage2 = run_example(
            "train_stage2",
            ["--dataset_dir", tiny_dataset, "--llm", lm_dir("llama"), "--output_dir", str(out / "stage2")]
            + ["--stage1_model_path", stage1.output_dir, "--num_candidates", "3", "--prompt_history_length", "5"]
            + ["--per_device_train_batch_size", "4", "--max_steps", "2", "--save_strategy", "no"],
        )
        evaluation = example_module("evaluate").main(
            ["--dataset_dir", tiny_dataset, "--output_dir", str(out / "evaluation"), "--cf_model_path", cf.output_dir]
            + ["--allmrec_model_path", stage2.output_dir, "--batch_size", "4", "--disable_tqdm", "true"]
            + ["--max_new_tokens", "6", "--max_users", "4", "--max_generation_users", "2", "--scenarios", "test"]
            + ["--item_embedding_sources", "cf", "--full_catalog", "false", "--plots", "false"]
        )
        runs[backbone] = {"cf": cf, "stage1": stage1, "stage2": stage2, "evaluation": evaluation}
    return runs


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_the_tiny_pipeline_runs_on_each_backbone(pipelines, backbone, tiny_dataset):
    from allmrec_hf.data import PreparedDataset
    from allmrec_hf.evaluation.evaluator import cf_candidate_scores, select_rows

    runs = pipelines[backbone]
    model_class = BACKBONES[backbone][1]
    cf = builders.load_cf_model(runs["cf"].output_dir)
    assert type(cf) is model_class and cf.config.hidden_size == 32
    assert runs["cf"].losses() and all(v == v for v in runs["cf"].losses().values())
    card = open(os.path.join(runs["cf"].output_dir, "README.md"), encoding="utf-8").read()
    architecture = {"gru4rec": "GRU4Rec: a GRU over", "nextitnet": "NextItNet: dilated causal convolutions over"}
    assert architecture[backbone] in card and f"{model_class.__name__}.from_pretrained" in card
    aligner = runs["stage1"].trainer.model
    assert type(aligner.cf_model) is model_class
    for name, tensor in cf.state_dict().items():  # stage 1 kept the pretrained CF model as it was
        assert torch.equal(aligner.cf_model.state_dict()[name], tensor), name
    recommender = ALLMRecForConditionalGeneration.from_pretrained(runs["stage2"].output_dir)
    assert type(recommender.cf_model) is model_class
    assert recommender.config.cf_config.model_type == backbone
    results = runs["evaluation"]
    cf_name = {"gru4rec": "GRU4Rec", "nextitnet": "NextItNet"}[backbone]
    assert list(results["methods"]) == [cf_name, "Popularity", "A-LLMRec"]
    test = results["results"]["test"]
    assert {"generation", "ranking"} <= set(test["A-LLMRec"]) and set(test[cf_name]) == {"ranking"}
    rows = select_rows(PreparedDataset.load(tiny_dataset), ["test"], 4, 42)
    scores = cf_candidate_scores(cf.eval(), rows, disable_tqdm=True)
    assert test[cf_name]["ranking"]["hit@1"] == pytest.approx(
        float((scores.argmax(-1) == [c.index(t) for c, t in zip(rows.candidates, rows.targets, strict=True)]).mean())
    )


def test_a_finished_cf_run_of_another_backbone_is_not_reused(pipelines, tiny_dataset):
    output = pipelines["gru4rec"]["cf"].output_dir
    with pytest.raises(ValueError, match="holds a finished 'gru4rec' CF model, not 'nextitnet'"):
        example_module("pretrain_cf").main(
            ["--dataset_dir", tiny_dataset, "--output_dir", output, "--cf_model", "nextitnet"]
        )


# --------------------------------------------------------------------------------------------- remote code
def test_trust_remote_code_loads_gru4rec_and_nextitnet_checkpoints_in_a_fresh_process(pipelines, tmp_path):
    histories = [[1, 2, 3], [4, 5, 6, 7, 8]]
    candidates = [[4, 5, 6], [9, 10, 11]]
    expected, checkpoints = {}, {}
    for backbone, runs in pipelines.items():
        checkpoint = tmp_path / backbone
        model = ALLMRecForConditionalGeneration.from_pretrained(runs["stage2"].output_dir).eval()
        model.save_pretrained(checkpoint, include_language_model=True)
        from allmrec_hf import ALLMRecProcessor

        processor = ALLMRecProcessor.from_pretrained(runs["stage2"].output_dir)
        processor.save_pretrained(checkpoint)
        for name in (f"modeling_{backbone}.py", f"configuration_{backbone}.py", "modeling_cf_common.py"):
            assert (checkpoint / name).exists(), name
        batch = processor(histories=histories, candidates=candidates)
        expected[backbone] = (model.score_candidates(**batch), model.cf_model.score_items(batch["cf_input_ids"],
                              torch.tensor(candidates)))  # fmt: skip
        checkpoints[backbone] = str(checkpoint)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["allmrec_hf"] = None  # the package must not be needed
        import torch
        from transformers import AutoModelForCausalLM, AutoProcessor
        for backbone, path in {checkpoints!r}.items():
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
            model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
            batch = processor(histories={histories!r}, candidates={candidates!r})
            cf_scores = model.cf_model.score_items(batch["cf_input_ids"], torch.tensor({candidates!r}))
            print(backbone, type(model.cf_model).__name__, type(model.cf_model).__module__,
                  model.score_candidates(**batch).tolist(), cf_scores.tolist(), sep="\\t")
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()[-2:]]
    for backbone, class_name, module, scores, cf_scores in lines:
        assert class_name == BACKBONES[backbone][1].__name__ and module.startswith("transformers_modules.")
        torch.testing.assert_close(torch.tensor(eval(scores)), expected[backbone][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.tensor(eval(cf_scores)), expected[backbone][1], rtol=1e-5, atol=1e-5)
