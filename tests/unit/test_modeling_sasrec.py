"""SASRecConfig and SASRecModel: shapes, causality, padding, cold users, scoring, losses, saving and the
errors on bad input."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoConfig, AutoModel

from allmrec_hf import SASRecConfig, SASRecModel, SASRecOutput

NUM = 20
MAX_LEN = 8


def make_model(seed: int = 0, **overrides) -> SASRecModel:
    torch.manual_seed(seed)
    settings = dict(num_items=NUM, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, max_seq_length=MAX_LEN)
    settings.update(overrides)
    model = SASRecModel(SASRecConfig(**settings)).eval()
    # Non-trivial layer-norm parameters, so that "equals the bias" and padding checks mean something.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.5)
    return model


@pytest.fixture
def model() -> SASRecModel:
    return make_model()


# --------------------------------------------------------------------------------------------- shapes
def test_output_shapes(model):
    histories = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5]])
    output = model(histories)
    assert isinstance(output, SASRecOutput)
    assert output.loss is None
    assert output.last_hidden_state.shape == (2, 5, 32)
    assert output.user_representation.shape == (2, 32)
    assert torch.equal(output.user_representation, output.last_hidden_state[:, -1])
    assert torch.equal(model.get_user_representation(histories), output.user_representation)
    assert model.encode(histories).shape == (2, 5, 32)
    as_tuple = model(histories, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], output.last_hidden_state)
    assert model(torch.randint(1, NUM + 1, (3, 20))).last_hidden_state.shape == (3, MAX_LEN, 32)
    assert model.get_item_embeddings().shape == (NUM + 1, 32)
    assert model.get_item_embeddings(torch.tensor([[1, 2, 3]])).shape == (1, 3, 32)
    assert model.get_input_embeddings() is model.item_embeddings


def test_config_defaults_follow_the_paper():
    config = SASRecConfig(num_items=7)
    assert config.hidden_size == config.max_seq_length == 50
    assert (config.num_hidden_layers, config.num_attention_heads) == (2, 1)
    assert config.hidden_dropout_prob == config.attention_dropout_prob == 0.5
    assert config.loss_type == "bce" and config.pad_token_id == 0
    assert config.vocab_size == 8
    assert config.model_type == "sasrec"


def test_padding_embedding_is_zero(model):
    assert torch.equal(model.item_embeddings.weight[0], torch.zeros(32))
    assert torch.equal(model.position_embeddings.weight[0], torch.zeros(32))


def test_eval_is_deterministic_and_train_uses_dropout(model):
    histories = torch.tensor([[1, 2, 3, 4, 5, 6]])
    assert torch.equal(model.get_user_representation(histories), model.get_user_representation(histories))
    model.train()
    torch.manual_seed(1)
    first = model.get_user_representation(histories)
    second = model.get_user_representation(histories)
    assert not torch.allclose(first, second)


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
    # the same inside a batch with a longer history
    batch = torch.tensor([[0, 0, 0] + items, [1, 2, 3, 4, 5, 6, 7]])
    users = model.get_user_representation(batch)
    torch.testing.assert_close(users[0], reference.user_representation[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(users[1], model.get_user_representation(batch[1:])[0], rtol=0, atol=1e-5)


def test_padded_positions_do_not_depend_on_items(model):
    """Padding is not attended to: only the real items (and their order) change the user representation."""
    first = model.get_user_representation(torch.tensor([[0, 0, 4, 9]]))
    second = model.get_user_representation(torch.tensor([[0, 0, 9, 4]]))
    assert not torch.allclose(first, second, atol=1e-4)


def test_long_histories_keep_the_most_recent_items(model):
    torch.manual_seed(3)
    long = torch.randint(1, NUM + 1, (2, 13))
    output = model(long)
    reference = model(long[:, -MAX_LEN:])
    assert output.last_hidden_state.shape[1] == MAX_LEN
    torch.testing.assert_close(output.last_hidden_state, reference.last_hidden_state, rtol=0, atol=0)
    # the cut-away items do not matter
    changed = long.clone()
    changed[:, :5] = 1
    torch.testing.assert_close(model(changed).user_representation, output.user_representation, rtol=0, atol=0)


def test_right_padding_raises(model):
    with pytest.raises(ValueError, match="history in row 0 ends with padding"):
        model(torch.tensor([[1, 2, 0]]))
    with pytest.raises(ValueError, match="history in row 1 ends with padding: histories must be left-padded"):
        model.get_user_representation(torch.tensor([[0, 1, 2], [3, 0, 0]]))


def test_histories_must_be_two_dimensional(model):
    with pytest.raises(ValueError, match=re.escape("histories must have shape (batch, seq_len), got (3,)")):
        model(torch.tensor([1, 2, 3]))


# --------------------------------------------------------------------------------------------- cold users
def test_empty_history_gives_one_constant_vector(model):
    """A cold user's representation is the final layer norm's bias: no item reaches the encoder."""
    bias = model.final_layernorm.bias.detach()
    assert bias.abs().sum() > 0
    empty = model.get_user_representation(torch.zeros((3, 0), dtype=torch.long))
    all_padding = model.get_user_representation(torch.zeros((2, 5), dtype=torch.long))
    assert empty.shape == (3, 32) and all_padding.shape == (2, 32)
    for row in torch.cat([empty, all_padding]):
        torch.testing.assert_close(row, bias, rtol=0, atol=1e-6)
    # mixed with warm users in one batch
    mixed = model.get_user_representation(torch.tensor([[0, 0, 0], [0, 4, 5]]))
    torch.testing.assert_close(mixed[0], bias, rtol=0, atol=1e-6)
    assert not torch.allclose(mixed[1], bias, atol=1e-3)
    torch.testing.assert_close(mixed[1], model.get_user_representation(torch.tensor([[4, 5]]))[0], rtol=0, atol=1e-5)
    # item embeddings do not reach it
    with torch.no_grad():
        model.item_embeddings.weight.add_(1.0)
    torch.testing.assert_close(model.get_user_representation(torch.zeros((1, 4), dtype=torch.long))[0], bias)


def test_empty_history_scores(model):
    scores = model.score_all_items(torch.zeros((2, 0), dtype=torch.long))
    assert scores.shape == (2, NUM + 1)
    torch.testing.assert_close(scores[0], scores[1])


# --------------------------------------------------------------------------------------------- ids
@pytest.mark.parametrize("bad", [NUM + 1, 100, -1])
def test_out_of_range_history_ids(model, bad):
    message = f"history item id {bad} is outside the CF model's vocabulary"
    with pytest.raises(ValueError, match=re.escape(message)):
        model(torch.tensor([[1, bad, 3]]))


def test_out_of_range_candidate_and_label_ids(model):
    histories = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match=rf"item id {NUM + 5} is outside .* ids must be in 1\.\.{NUM}"):
        model.score_items(histories, torch.tensor([[4, NUM + 5]]))
    with pytest.raises(ValueError, match="item id -2 is outside"):
        model.get_item_embeddings(torch.tensor([-2]))
    with pytest.raises(ValueError, match=f"label item id {NUM + 1} is outside"):
        model(histories, labels=torch.tensor([[2, 3, NUM + 1]]), negative_ids=torch.tensor([[5, 6, 7]]))
    with pytest.raises(ValueError, match=f"negative item id {NUM + 3} is outside"):
        model(histories, labels=torch.tensor([[2, 3, 4]]), negative_ids=torch.tensor([[5, NUM + 3, 7]]))


# --------------------------------------------------------------------------------------------- scoring
def test_score_items_is_a_dot_product(model):
    histories = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5]])
    candidates = torch.tensor([[8, 9, 1], [6, 7, 20]])
    scores = model.score_items(histories, candidates)
    users = model.get_user_representation(histories)
    table = model.get_item_embeddings()
    assert scores.shape == (2, 3)
    for row in range(2):
        for column in range(3):
            expected = torch.dot(users[row], table[candidates[row, column]])
            torch.testing.assert_close(scores[row, column], expected, rtol=1e-5, atol=1e-6)


def test_score_all_items(model):
    histories = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5]])
    scores = model.score_all_items(histories)
    assert scores.shape == (2, NUM + 1)
    assert (scores[:, 0] == float("-inf")).all()
    assert torch.isfinite(scores[:, 1:]).all()
    assert (scores.argmax(-1) != 0).all()
    everything = torch.arange(1, NUM + 1).expand(2, -1)
    torch.testing.assert_close(scores[:, 1:], model.score_items(histories, everything), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- training
def sample_negatives(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random item per position, never the positive one."""
    negatives = torch.randint(1, NUM + 1, labels.shape, generator=generator)
    return torch.where(negatives == labels, negatives % NUM + 1, negatives)


def planted_batch(batch_size: int = 32, length: int = MAX_LEN + 1, seed: int = 0):
    """Sequences that always continue i -> i + 1 (wrapping), split into inputs and next-item labels."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, NUM, (batch_size, 1), generator=generator)
    sequences = (starts + torch.arange(length)) % NUM + 1
    inputs, labels = sequences[:, :-1], sequences[:, 1:]
    return inputs, labels, sample_negatives(labels, generator)


@pytest.mark.parametrize("loss_type", ["bce", "ce"])
def test_training_learns_a_planted_pattern(loss_type):
    model = make_model(seed=0, loss_type=loss_type, hidden_dropout_prob=0.1, attention_dropout_prob=0.1)
    inputs, labels, fixed_negatives = planted_batch()
    bce = loss_type == "bce"
    with torch.no_grad():
        initial = model(inputs, labels=labels, negative_ids=fixed_negatives if bce else None).loss.item()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(1)
    model.train()
    torch.manual_seed(0)
    for _ in range(50):
        negatives = sample_negatives(labels, generator) if bce else None  # fresh negatives every step
        loss = model(inputs, labels=labels, negative_ids=negatives).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = model(inputs, labels=labels, negative_ids=fixed_negatives if bce else None).loss.item()
        test_inputs, test_labels, _ = planted_batch(seed=1)
        predicted = model.score_all_items(test_inputs).argmax(-1)
    assert final < 0.5 * initial, (initial, final)
    assert (predicted == test_labels[:, -1]).float().mean() > 0.7  # chance is 1/20
    assert torch.equal(model.item_embeddings.weight[0], torch.zeros(32))  # padding row never trained


def test_losses_ignore_zero_labels(model):
    inputs = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]])
    labels = torch.tensor([[0, 0, 2, 3, 4], [5, 6, 7, 8, 9]])
    negatives = torch.tensor([[7, 7, 7, 7, 7], [1, 1, 1, 1, 1]])
    loss = model(inputs, labels=labels, negative_ids=negatives).loss
    hidden = model(inputs).last_hidden_state
    table = model.get_item_embeddings()
    valid = labels != 0
    positive = (hidden * table[labels]).sum(-1)[valid]
    negative = (hidden * table[negatives]).sum(-1)[valid]
    expected = torch.nn.functional.softplus(-positive).mean() + torch.nn.functional.softplus(negative).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    # several negatives per position
    many = torch.stack([negatives, negatives % NUM + 1], dim=-1)
    assert model(inputs, labels=labels, negative_ids=many).loss.shape == ()


def test_ce_loss_is_cross_entropy_over_items():
    model = make_model(loss_type="ce")
    inputs = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    labels = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]])
    loss = model(inputs, labels=labels).loss
    logits = model(inputs).last_hidden_state @ model.get_item_embeddings()[1:].T
    valid = labels != 0
    expected = torch.nn.functional.cross_entropy(logits[valid], labels[valid] - 1)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_long_histories_crop_labels_and_negatives_too(model):
    torch.manual_seed(4)
    inputs, labels, negatives = (torch.randint(1, NUM + 1, (2, 13)) for _ in range(3))
    full = model(inputs, labels=labels, negative_ids=negatives).loss
    recent = slice(-MAX_LEN, None)
    cropped = model(inputs[:, recent], labels=labels[:, recent], negative_ids=negatives[:, recent]).loss
    torch.testing.assert_close(full, cropped, rtol=0, atol=0)


def test_bce_without_negatives_raises(model):
    with pytest.raises(ValueError, match="loss_type='bce' needs negative_ids"):
        model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[2, 3, 4]]))


def test_label_shape_mismatch_raises(model):
    with pytest.raises(ValueError, match=re.escape("labels shape (1, 2) does not match histories (1, 3)")):
        model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[2, 3]]), negative_ids=torch.tensor([[4, 5]]))


# --------------------------------------------------------------------------------------------- saving
def test_save_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = SASRecModel.from_pretrained(tmp_path).eval()
    without_path = lambda config: {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert without_path(loaded.config) == without_path(model.config)
    histories = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5]])
    assert torch.equal(loaded(histories).last_hidden_state, model(histories).last_hidden_state)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_auto_classes_resolve_sasrec(model, tmp_path):
    config = AutoConfig.for_model("sasrec", num_items=9, hidden_size=16)
    assert type(config) is SASRecConfig and config.num_items == 9
    assert type(AutoModel.from_config(config)) is SASRecModel
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is SASRecConfig
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is SASRecModel
    histories = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded.get_user_representation(histories), model.get_user_representation(histories))


# --------------------------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_items=0), "SASRecConfig.num_items must be a positive integer, got 0"),
        (dict(num_items=-5), "SASRecConfig.num_items must be a positive integer, got -5"),
        (dict(num_items=10, max_seq_length=0), "max_seq_length must be a positive integer, got 0"),
        (dict(num_items=10, num_hidden_layers=0), "num_hidden_layers must be a positive integer, got 0"),
        (
            dict(num_items=10, hidden_dropout_prob=1.0),
            "SASRecConfig.hidden_dropout_prob must be in [0, 1), got 1.0",
        ),
        (
            dict(num_items=10, attention_dropout_prob=-0.1),
            "attention_dropout_prob must be in [0, 1), got -0.1",
        ),
        (
            dict(num_items=10, hidden_size=32, num_attention_heads=3),
            "hidden_size (32) must be divisible by num_attention_heads (3)",
        ),
        (dict(num_items=10, loss_type="mse"), "loss_type must be 'bce' or 'ce', got 'mse'"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SASRecConfig(**kwargs)


def test_config_round_trip(tmp_path):
    config = SASRecConfig(num_items=12, hidden_size=16, num_attention_heads=4, loss_type="ce", max_seq_length=7)
    config.save_pretrained(tmp_path)
    loaded = SASRecConfig.from_pretrained(tmp_path)
    assert (loaded.num_items, loaded.hidden_size, loaded.num_attention_heads) == (12, 16, 4)
    assert loaded.loss_type == "ce"
    assert loaded.max_seq_length == 7 and loaded.vocab_size == 13


def test_save_pretrained_refuses_sharded_parameters_and_saves_under_fsdp2_with_the_gathered_state(tmp_path):
    """Under FSDP2 a model's parameters are this process's shards (DTensors) and its class is one FSDP generates in
    torch's modules. `save_pretrained` without a gathered `state_dict` stops with an error that says what to do,
    before writing anything; with one it writes whole weights under the model's own class and code."""
    import socket

    import torch.distributed as dist
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = make_model()
        expected = {name: value.clone() for name, value in model.state_dict().items()}
        fully_shard(model)
        assert type(model).__name__ == "FSDPSASRecModel"
        with pytest.raises(ValueError, match=r"sharded across processes .*save_trained_model"):
            model.save_pretrained(tmp_path / "shards")
        assert not (tmp_path / "shards").exists()

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        model.save_pretrained(tmp_path / "whole", state_dict=state)
        assert type(model).__name__ == "FSDPSASRecModel"  # the class is only swapped while saving
    finally:
        dist.destroy_process_group()
    saved = load_file(tmp_path / "whole" / "model.safetensors")
    assert set(saved) == set(expected)
    assert all(torch.equal(saved[name], value) for name, value in expected.items())
    config = AutoConfig.from_pretrained(tmp_path / "whole")
    assert config.auto_map["AutoModel"] == "modeling_sasrec.SASRecModel"
    assert (tmp_path / "whole" / "modeling_sasrec.py").is_file()
    assert not any(path.name.startswith("_fsdp") for path in (tmp_path / "whole").iterdir())
    reloaded = AutoModel.from_pretrained(tmp_path / "whole", trust_remote_code=True)
    assert all(torch.equal(reloaded.state_dict()[name], value) for name, value in expected.items())
