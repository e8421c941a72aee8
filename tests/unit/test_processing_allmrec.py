"""ALLMRecProcessor and PromptTemplate: prompt text, placeholders, labels, padding, candidates, matching,
saving/loading (also without the package installed) and the errors on bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from allmrec_hf import (
    ALLMRecProcessor,
    CandidateMatch,
    ItemCatalog,
    PromptTemplate,
    SASRecConfig,
    SASRecModel,
)
from allmrec_hf.processing_allmrec import CANDIDATE_TOKEN, HISTORY_TOKEN, USER_TOKEN
from conftest import NUM_ITEMS, make_titles

TITLES = make_titles()


def title(index: int) -> str:
    return TITLES[index - 1]


def unpadded(batch, row: int, key: str = "input_ids") -> list[int]:
    mask = batch["attention_mask"][row].bool()
    return batch[key][row][mask].tolist()


def decoded_prompt(processor, batch, row: int = 0) -> str:
    return processor.decode(unpadded(batch, row))


def expected_prompt(history, candidates, noun="movie", verb="watch", past_verb="watched") -> str:
    shown = ",".join(f'"{title(i)}"{HISTORY_TOKEN}' for i in history[-10:]) or "nothing yet"
    text = f"{USER_TOKEN} is a user representation. This user has {past_verb} {shown} in the previous. "
    if candidates is None:
        return text + f"Recommend one next {noun} for this user to {verb} next. The recommendation is"
    offered = ",".join(f'"{title(i)}"{CANDIDATE_TOKEN}' for i in candidates)
    return (
        text + f"Recommend one next {noun} for this user to {verb} next from the following {noun} title set, "
        f"{offered}. The recommendation is"
    )


# --------------------------------------------------------------------------------------------- prompt text
def test_default_prompt_is_the_papers(processor):
    batch = processor(histories=[[1, 2, 3]], candidates=[[5, 4, 6]])
    text = decoded_prompt(processor, batch)
    assert text == (
        '[UserRep] is a user representation. This user has watched "Red blue 1990"[HistoryEmb],'
        '"Blue night 1991"[HistoryEmb],"Green city 1992"[HistoryEmb] in the previous. '
        "Recommend one next movie for this user to watch next from the following movie title set, "
        '"Night moon 1994"[CandidateEmb],"Dark star 1993"[CandidateEmb],"River house 1995"[CandidateEmb]. '
        "The recommendation is"
    )
    assert text == expected_prompt([1, 2, 3], [5, 4, 6])
    assert processor.build_prompt([1, 2, 3], [5, 4, 6]) == (text, [1, 2, 3, 5, 4, 6])


def test_prompt_without_candidates(processor):
    batch = processor(histories=[[7, 8]])
    assert decoded_prompt(processor, batch) == expected_prompt([7, 8], None)
    assert decoded_prompt(processor, batch).endswith(
        "Recommend one next movie for this user to watch next. The recommendation is"
    )
    assert batch["item_ids"].tolist() == [[7, 8]]
    assert "candidate_ids" not in batch and "labels" not in batch


def test_only_the_last_ten_history_items_are_shown(processor):
    history = list(range(1, 16))
    batch = processor(histories=[history], candidates=[[20, 21]])
    text = decoded_prompt(processor, batch)
    for index in range(1, 6):
        assert f'"{title(index)}"' not in text
    for index in range(6, 16):
        assert f'"{title(index)}"{HISTORY_TOKEN}' in text
    assert text == expected_prompt(history, [20, 21])
    assert (batch["input_ids"] == processor.history_token_id).sum().item() == 10
    assert batch["item_ids"][0].tolist() == list(range(6, 16)) + [20, 21]


def test_cf_input_ids_keep_the_last_max_history_length_left_padded(processor):
    long_history = list(range(1, NUM_ITEMS + 1)) * 2  # 60 items
    batch = processor(histories=[long_history, [4, 5, 6]])
    assert processor.max_history_length == 50
    assert batch["cf_input_ids"].shape == (2, 50)
    assert batch["cf_input_ids"][0].tolist() == long_history[-50:]
    assert batch["cf_input_ids"][1].tolist() == [0] * 47 + [4, 5, 6]
    assert batch["cf_input_ids"].dtype == torch.long


def test_custom_max_history_length(tokenizer, catalog):
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, max_history_length=3)
    batch = processor(histories=[[1, 2, 3, 4, 5], [9]])
    assert batch["cf_input_ids"].tolist() == [[3, 4, 5], [0, 0, 9]]
    assert batch["item_ids"][0].tolist() == [1, 2, 3, 4, 5]  # the prompt still shows up to 10


def test_candidates_appear_in_the_given_order(processor):
    for order in ([3, 9, 1], [9, 1, 3], [1, 3, 9]):
        batch = processor(histories=[[2]], candidates=[order])
        text = decoded_prompt(processor, batch)
        positions = [text.index(f'"{title(i)}"{CANDIDATE_TOKEN}') for i in order]
        assert positions == sorted(positions)
        assert batch["candidate_ids"][0].tolist() == order
        assert batch["item_ids"][0].tolist() == [2] + order


def test_other_domain_changes_the_text(tokenizer, catalog):
    template = PromptTemplate(noun="game", verb="play", past_verb="played")
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=template)
    text = decoded_prompt(processor, processor(histories=[[1, 2]], candidates=[[3, 4]]))
    assert text == expected_prompt([1, 2], [3, 4], noun="game", verb="play", past_verb="played")
    assert "This user has played " in text
    assert "Recommend one next game for this user to play next from the following game title set," in text
    assert "movie" not in text and "watch" not in text


def test_custom_template_texts(tokenizer, catalog):
    template = PromptTemplate(
        prompt="{user} likes {history}. Pick from {candidates}. Answer:",
        history_item="<{title}>{item}",
        candidate_item="[{title}]",  # no candidate placeholder
        separator="; ",
        answer=" {title}",
        history_length=2,
    )
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=template)
    batch = processor(histories=[[1, 2, 3]], candidates=[[4, 5]], targets=[5])
    text, items = processor.build_prompt([1, 2, 3], [4, 5])
    assert text == (
        f"{USER_TOKEN} likes <{title(2)}>{HISTORY_TOKEN}; <{title(3)}>{HISTORY_TOKEN}. "
        f"Pick from [{title(4)}]; [{title(5)}]. Answer:"
    )
    assert items == [2, 3]
    assert batch["item_ids"].tolist() == [[2, 3]]
    assert processor.decode(processor.answer_ids(5)) == f" {title(5)}</s>"


# --------------------------------------------------------------------------------------------- placeholders
def test_item_ids_follow_placeholder_order(processor):
    histories = [[1, 2, 3], [], list(range(1, 13))]
    candidates = [[4, 5], [6, 7, 8], [20]]
    batch = processor(histories=histories, candidates=candidates)
    history_id, candidate_id = processor.history_token_id, processor.candidate_token_id
    for row in range(3):
        ids = batch["input_ids"][row]
        placeholders = ids[(ids == history_id) | (ids == candidate_id)]
        items = batch["item_ids"][row]
        assert len(placeholders) == int((items != 0).sum())
        n_history = min(len(histories[row]), 10)
        assert placeholders.tolist() == [history_id] * n_history + [candidate_id] * len(candidates[row])
        assert items[items != 0].tolist() == histories[row][-10:] + candidates[row]
        assert (ids == processor.user_token_id).sum().item() == 1
    assert batch["item_ids"][1].tolist() == [6, 7, 8] + [0] * 8  # right-padded with 0 to 10 + 1


def test_placeholders_are_added_once(tokenizer, catalog):
    base = len(tokenizer)
    first = ALLMRecProcessor(tokenizer, tokenizer, catalog)
    assert len(tokenizer) == base + 4
    second = ALLMRecProcessor(tokenizer, tokenizer, catalog)
    assert len(tokenizer) == base + 4
    assert first.placeholder_token_ids == second.placeholder_token_ids
    ids = first.placeholder_token_ids
    assert ids == {
        "user_token_id": tokenizer.convert_tokens_to_ids(USER_TOKEN),
        "history_token_id": tokenizer.convert_tokens_to_ids(HISTORY_TOKEN),
        "candidate_token_id": tokenizer.convert_tokens_to_ids(CANDIDATE_TOKEN),
    }
    assert len(set(ids.values())) == 3 and all(i >= base for i in ids.values())
    assert tokenizer.unk_token_id not in ids.values()
    # each placeholder is one token, also when glued to text
    glued = tokenizer(f'x"{TITLES[0]}"{HISTORY_TOKEN},{USER_TOKEN}', add_special_tokens=False)["input_ids"]
    assert glued.count(ids["history_token_id"]) == 1 and glued.count(ids["user_token_id"]) == 1


def test_text_encoder_tokenizer_does_not_get_placeholders(processor, tokenizer):
    assert processor.text_encoder_tokenizer is not processor.tokenizer
    assert USER_TOKEN not in processor.text_encoder_tokenizer.get_vocab()
    assert len(processor.text_encoder_tokenizer) == len(processor.tokenizer) - 4


# ------------------------------------------------------------------------------------ labels and padding
def test_labels_cover_only_the_answer(processor):
    histories, candidates, targets = [[1, 2], [3, 4, 5, 6]], [[7, 8, 9], [10, 11]], [8, 11]
    batch = processor(histories=histories, candidates=candidates, targets=targets)
    assert batch["labels"].shape == batch["input_ids"].shape
    for row, target in enumerate(targets):
        answer = processor.answer_ids(target)
        labels = batch["labels"][row]
        assert labels[labels != -100].tolist() == answer
        assert batch["input_ids"][row, -len(answer) :].tolist() == answer  # left padding: answer at the end
        assert (labels[: -len(answer)] == -100).all()
    # answer ids are the quoted title and eos
    assert processor.decode(processor.answer_ids(8)) == f' "{title(8)}"</s>'
    assert processor.answer_ids(8)[-1] == processor.tokenizer.eos_token_id
    assert (
        processor.tokenizer(f' "{title(8)}"', add_special_tokens=False)["input_ids"] == (processor.answer_ids(8)[:-1])
    )


def test_targets_without_candidates(processor):
    batch = processor(histories=[[1, 2]], targets=[12])
    labels = batch["labels"][0]
    assert labels[labels != -100].tolist() == processor.answer_ids(12)
    assert processor.decode(batch["input_ids"][0]) == expected_prompt([1, 2], None) + f' "{title(12)}"</s>'


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_side(processor, side):
    histories, candidates, targets = [[1], list(range(1, 11))], [[2, 3], [12, 13, 14]], [3, 14]
    batch = processor(histories=histories, candidates=candidates, targets=targets, padding_side=side)
    reference = processor(histories=histories, candidates=candidates, targets=targets)
    pad = processor.tokenizer.pad_token_id
    short = batch["attention_mask"][0]
    n_pad = int((short == 0).sum())
    assert n_pad > 0 and batch["attention_mask"][1].all()
    if side == "left":
        assert short[:n_pad].sum() == 0 and short[n_pad:].all()
        assert (batch["input_ids"][0, :n_pad] == pad).all() and (batch["labels"][0, :n_pad] == -100).all()
    else:
        assert short[-n_pad:].sum() == 0 and short[:-n_pad].all()
        assert (batch["input_ids"][0, -n_pad:] == pad).all() and (batch["labels"][0, -n_pad:] == -100).all()
    for row in range(2):
        assert unpadded(batch, row) == unpadded(reference, row)
        assert unpadded(batch, row, "labels") == unpadded(reference, row, "labels")
    # the CF histories and item lists do not depend on the prompt padding side
    keys = ("cf_input_ids", "item_ids", "candidate_ids", "candidate_input_ids", "candidate_attention_mask")
    for key in keys:
        assert torch.equal(batch[key], reference[key]), key


def test_return_tensors_none_gives_lists(processor):
    batch = processor(histories=[[1], [2, 3]], candidates=[[4], [5, 6]], return_tensors=None)
    assert isinstance(batch["input_ids"], list) and isinstance(batch["input_ids"][0], list)
    assert batch["cf_input_ids"] == [[0, 1], [2, 3]]
    assert batch["candidate_ids"] == [[4, 0], [5, 6]]


# --------------------------------------------------------------------------------------------- cold users
def test_empty_history(processor):
    batch = processor(histories=[[], [1, 2]], candidates=[[3, 4], [5, 6]], targets=[4, 6])
    text = decoded_prompt(processor, batch, 0)
    assert text == expected_prompt([], [3, 4]) + f' "{title(4)}"</s>'
    assert "This user has watched nothing yet in the previous." in text
    assert (batch["input_ids"][0] == processor.history_token_id).sum() == 0
    assert (batch["input_ids"][0] == processor.candidate_token_id).sum() == 2
    assert batch["item_ids"][0].tolist() == [3, 4, 0, 0]
    assert batch["cf_input_ids"][0].tolist() == [0, 0]


def test_all_cold_batch_gives_integer_tensors_the_cf_model_accepts(processor):
    batch = processor(histories=[[], []])
    assert batch["cf_input_ids"].dtype == torch.long and batch["item_ids"].dtype == torch.long
    assert batch["cf_input_ids"].shape[0] == 2 and batch["item_ids"].shape[0] == 2
    assert decoded_prompt(processor, batch, 1) == expected_prompt([], None)
    torch.manual_seed(0)
    model = SASRecModel(SASRecConfig(num_items=NUM_ITEMS, hidden_size=32)).eval()
    users = model.get_user_representation(batch["cf_input_ids"])
    assert users.shape == (2, 32)


def test_custom_empty_history_text(tokenizer, catalog):
    template = {"empty_history": "no movies"}
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=template)
    assert "has watched no movies in the previous" in processor.build_prompt([], [1])[0]


# --------------------------------------------------------------------------------------------- candidates
def test_candidate_answer_tokens(processor):
    candidates = [[3, 14, 7], [25, 1, 2]]
    batch = processor(histories=[[1], [2]], candidates=candidates)
    width = max(len(processor.answer_ids(i)) for row in candidates for i in row)
    assert batch["candidate_input_ids"].shape == (2, 3, width)
    assert batch["candidate_attention_mask"].shape == (2, 3, width)
    for row, items in enumerate(candidates):
        for slot, item in enumerate(items):
            mask = batch["candidate_attention_mask"][row, slot].bool()
            assert batch["candidate_input_ids"][row, slot][mask].tolist() == processor.answer_ids(item)
            assert mask[: mask.sum()].all()  # right-padded
            assert (batch["candidate_input_ids"][row, slot][~mask] == processor.tokenizer.pad_token_id).all()


def test_ragged_candidate_lists(processor):
    batch = processor(histories=[[1], [2], [3]], candidates=[[4], [5, 6, 7], [8, 9]])
    assert batch["candidate_ids"].tolist() == [[4, 0, 0], [5, 6, 7], [8, 9, 0]]
    assert batch["candidate_input_ids"].shape[:2] == (3, 3)
    for row, n in enumerate([1, 3, 2]):
        assert batch["candidate_attention_mask"][row, n:].sum() == 0
        assert (batch["candidate_input_ids"][row, n:] == 0).all()
        assert (batch["candidate_attention_mask"][row, :n].sum(-1) > 0).all()
    mask = batch["candidate_attention_mask"][0, 0].bool()
    assert batch["candidate_input_ids"][0, 0][mask].tolist() == processor.answer_ids(4)


# --------------------------------------------------------------------------------------------- item texts
def test_tokenize_item_texts(processor, catalog):
    items = [1, 2, 3]
    encoded = processor.tokenize_item_texts(items)
    texts = [catalog.text(i, "{title}, {description}") for i in items]
    assert texts == [
        "Red blue 1990",
        "Blue night 1991, a film about blue",
        "Green city 1992, a film about green",
    ]
    for row, text in enumerate(texts):
        mask = encoded["attention_mask"][row].bool()
        assert processor.text_encoder_tokenizer.decode(encoded["input_ids"][row][mask]) == text
    assert encoded["input_ids"].shape[0] == 3


def test_tokenize_item_texts_truncates_and_checks(tokenizer, catalog):
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, item_text_max_length=4)
    assert processor.tokenize_item_texts([2, 3])["input_ids"].shape == (2, 4)
    with pytest.raises(KeyError, match="item 31 is not in the catalog"):
        processor.tokenize_item_texts([1, 31])


def test_item_text_template(tokenizer, catalog):
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, item_text_template="{title}")
    encoded = processor.tokenize_item_texts([2])
    assert processor.text_encoder_tokenizer.decode(encoded["input_ids"][0]) == "Blue night 1991"
    with pytest.raises(ValueError, match="item_text_template must contain '{title}', got '{description}'"):
        ALLMRecProcessor(tokenizer, tokenizer, catalog, item_text_template="{description}")


# --------------------------------------------------------------------------------------------- matching
@pytest.fixture
def movies(tokenizer) -> ALLMRecProcessor:
    catalog = ItemCatalog(["Heat", "Heat (1995)", "Toy Story", "Casino", "Up", "Toy Story"])
    return ALLMRecProcessor(tokenizer, tokenizer, catalog)


@pytest.mark.parametrize(
    ("text", "candidates", "item", "status", "matches"),
    [
        (' "Toy Story"', [3, 4], 3, "exact", [3]),
        ("heat (1995).", [1, 2], 2, "exact", [2]),  # also contains "heat", but the exact match wins
        ("HEAT", [1, 2], 1, "exact", [1]),
        ('I recommend "Heat (1995)" to this user', [1, 2, 4], 2, "substring", [2]),  # "Heat" is inside it
        ("I recommend Heat", [1, 3], 1, "substring", [1]),
        ("Toy Story or Casino", [3, 4, 1], None, "ambiguous", [3, 4]),
        ("Toy Story", [3, 6], None, "ambiguous", [3, 6]),  # duplicate titles
        ("The recommendation is Fargo", [1, 3, 4], None, "none", []),
        ("", [1, 2], None, "none", []),
        ("Casino", [1, 2], None, "none", []),  # not a candidate
    ],
)
def test_match_candidates(movies, text, candidates, item, status, matches):
    (result,) = movies.match_candidates([text], [candidates])
    assert result == CandidateMatch(item, status, matches, text)


def test_match_candidates_batch_with_padded_tensor(movies):
    results = movies.match_candidates(["Casino", "heat"], torch.tensor([[4, 3, 0], [1, 0, 0]]))
    assert [(r.item_id, r.status) for r in results] == [(4, "exact"), (1, "exact")]


def test_match_candidates_on_generated_answers(processor):
    batch = processor(histories=[[1]], candidates=[[5, 6, 7]])
    answer = processor.decode(processor.answer_ids(6), skip_special_tokens=True)
    (result,) = processor.match_candidates([answer], batch["candidate_ids"])
    assert (result.item_id, result.status) == (6, "exact")


def test_match_candidates_length_mismatch(movies):
    with pytest.raises(ValueError, match="2 texts for 1 candidate lists"):
        movies.match_candidates(["a", "b"], [[1, 2]])


# --------------------------------------------------------------------------------------------- saving
def assert_same_batch(first, second):
    assert sorted(first.keys()) == sorted(second.keys())
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_save_and_load(processor, catalog, tmp_path):
    processor.save_pretrained(tmp_path)
    assert os.path.isfile(tmp_path / "item_catalog.jsonl")
    assert os.path.isfile(tmp_path / "processor_config.json")
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["prompt_template"] == PromptTemplate().to_dict()
    assert "catalog" not in config
    loaded = ALLMRecProcessor.from_pretrained(tmp_path)
    assert loaded.catalog == catalog
    assert loaded.prompt_template == processor.prompt_template
    assert loaded.placeholder_token_ids == processor.placeholder_token_ids
    assert len(loaded.tokenizer) == len(processor.tokenizer)
    assert len(loaded.text_encoder_tokenizer) == len(processor.text_encoder_tokenizer)
    kwargs = dict(histories=[[1, 2, 3], []], candidates=[[4, 5], [6, 7, 8]], targets=[5, 8])
    assert_same_batch(processor(**kwargs), loaded(**kwargs))
    assert torch.equal(
        processor.tokenize_item_texts([2, 3])["input_ids"], loaded.tokenize_item_texts([2, 3])["input_ids"]
    )


def test_save_and_load_custom_settings(tokenizer, catalog, tmp_path):
    template = PromptTemplate(
        noun="game",
        verb="play",
        past_verb="played",
        empty_history="no games",
        history_length=3,
        separator=" | ",
    )
    processor = ALLMRecProcessor(
        tokenizer,
        tokenizer,
        catalog,
        prompt_template=template,
        max_history_length=4,
        item_text_template="{title} ({description})",
        item_text_max_length=16,
    )
    processor.save_pretrained(tmp_path)
    loaded = ALLMRecProcessor.from_pretrained(tmp_path)
    assert loaded.prompt_template == template
    assert isinstance(loaded.prompt_template, PromptTemplate)
    assert (loaded.max_history_length, loaded.item_text_template, loaded.item_text_max_length) == (
        4,
        "{title} ({description})",
        16,
    )
    kwargs = dict(histories=[list(range(1, 8)), []], candidates=[[9, 10], [11]], targets=[10, 11])
    assert_same_batch(processor(**kwargs), loaded(**kwargs))
    assert "no games" in loaded.build_prompt([], [1])[0]


def test_from_pretrained_with_explicit_catalog(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    other = ItemCatalog([f"Other {i}" for i in range(1, 6)])
    loaded = ALLMRecProcessor.from_pretrained(tmp_path, catalog=other)
    assert loaded.catalog is other


def test_auto_processor_without_the_package(processor, tmp_path):
    folder = tmp_path / "saved"
    processor.save_pretrained(folder)
    kwargs = dict(histories=[[1, 2, 3], [4]], candidates=[[5, 6], [7, 8]], targets=[6, 8])
    expected = {key: value.tolist() for key, value in processor(**kwargs).items()}
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["allmrec_hf"] = None  # the package cannot be imported
        try:
            import allmrec_hf  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("allmrec_hf was importable")
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert not type(processor).__module__.startswith("allmrec_hf"), type(processor).__module__
        batch = processor(**{kwargs!r})
        print("RESULT" + json.dumps({{
            "class": type(processor).__name__,
            "num_items": processor.catalog.num_items,
            "batch": {{key: value.tolist() for key, value in batch.items()}},
        }}))
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    payload = json.loads(line[len("RESULT") :])
    assert payload["class"] == "ALLMRecProcessor"
    assert payload["num_items"] == NUM_ITEMS
    assert payload["batch"] == expected


# --------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(histories=[[1, 31]]), "history item (row 0) 31 is not in the catalog"),
        (dict(histories=[[1], [0, 2]]), "history item (row 1) 0 is not in the catalog"),
        (dict(histories=[[1]], candidates=[[2, 99]]), "candidate item (row 0) 99 is not in the catalog"),
        (
            dict(histories=[[1]], candidates=[[2, 3]], targets=[-4]),
            "target item (row 0) -4 is not in the catalog",
        ),
        (dict(histories=[[1]], targets=[31]), "target item (row 0) 31 is not in the catalog"),
        (dict(histories=[[1, "2"]]), "history item (row 0) '2' is not an integer catalog index"),
    ],
)
def test_unknown_items(processor, kwargs, message):
    with pytest.raises(KeyError, match=re.escape(message)):
        processor(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(histories=[[1]], candidates=[[2, 3, 2]]), ValueError, "duplicate candidate 2 in row 0"),
        (
            dict(histories=[[1], [2]], candidates=[[2, 3], [4, 5]], targets=[3, 7]),
            ValueError,
            "target 7 of row 1 is not among its candidates [4, 5]",
        ),
        (dict(histories=[[1], [2]], candidates=[[3]]), ValueError, "1 candidate lists for 2 histories"),
        (dict(histories=[[1]], candidates=[[3], [4]]), ValueError, "2 candidate lists for 1 histories"),
        (dict(histories=[[1], [2]], targets=[3]), ValueError, "1 targets for 2 histories"),
        (dict(histories=[[1]], candidates=[[]]), ValueError, "candidate list of row 0 is empty"),
        (dict(histories=[[1], 5]), TypeError, "histories[1] is 5"),
        (dict(histories=["abc"]), TypeError, "histories[0] is 'abc'"),
        (dict(histories="1 2 3"), TypeError, "histories must be a list of lists"),
        (
            dict(histories=[[1]], padding_side="middle"),
            ValueError,
            "padding_side must be 'left' or 'right', got 'middle'",
        ),
        (dict(histories=[[1]], foo=1, bar=2), TypeError, "unexpected arguments: ['bar', 'foo']"),
    ],
)
def test_bad_batches(processor, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        processor(**kwargs)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            dict(prompt="{user} {candidates}"),
            "PromptTemplate.prompt must contain '{history}', got '{user} {candidates}'",
        ),
        (
            dict(prompt="{user} {history}"),
            "PromptTemplate.prompt must contain '{candidates}', got '{user} {history}'",
        ),
        (
            dict(prompt_without_candidates="{user}"),
            "PromptTemplate.prompt_without_candidates must contain '{history}'",
        ),
        (dict(history_item="{item}"), "PromptTemplate.history_item must contain '{title}', got '{item}'"),
        (
            dict(candidate_item='"x"{item}'),
            "PromptTemplate.candidate_item must contain '{title}', got '\"x\"{item}'",
        ),
        (dict(answer=" it"), "PromptTemplate.answer must contain '{title}', got ' it'"),
        (dict(history_length=-1), "history_length must be a non-negative integer, got -1"),
        (dict(history_length=2.5), "history_length must be a non-negative integer, got 2.5"),
    ],
)
def test_invalid_prompt_template(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PromptTemplate(**values)


def test_prompt_template_from_dict():
    assert PromptTemplate.from_dict({"noun": "book"}) == PromptTemplate(noun="book")
    assert PromptTemplate.from_dict(PromptTemplate(verb="x").to_dict()) == PromptTemplate(verb="x")
    with pytest.raises(ValueError, match=re.escape("unknown PromptTemplate fields: ['nouns', 'zzz']")):
        PromptTemplate.from_dict({"nouns": "book", "zzz": 1})


def test_processor_rejects_unknown_template_field(tokenizer, catalog):
    with pytest.raises(ValueError, match="'colour'"):
        ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template={"colour": "red"})


def test_history_length_zero_hides_history(tokenizer, catalog):
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template={"history_length": 0})
    batch = processor(histories=[[1, 2]], candidates=[[3]])
    assert batch["item_ids"].tolist() == [[3]]
    assert batch["cf_input_ids"].tolist() == [[1, 2]]


def test_title_with_placeholder_token(tokenizer):
    catalog = ItemCatalog(["Fine title", "Bad [HistoryEmb] title"])
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog)
    processor(histories=[[1]], candidates=[[1]])  # the good item is fine
    message = "item 2's title 'Bad [HistoryEmb] title' contains the placeholder token [HistoryEmb]"
    with pytest.raises(ValueError, match=re.escape(message)):
        processor(histories=[[2]])
    with pytest.raises(ValueError, match=re.escape(message)):
        processor(histories=[[1]], candidates=[[1, 2]])
    with pytest.raises(ValueError, match=re.escape(message)):
        processor.answer_ids(2)


@pytest.mark.parametrize("value", [0, -3, 2.0, "50"])
def test_bad_max_history_length(tokenizer, catalog, value):
    message = f"max_history_length must be a positive integer, got {value!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        ALLMRecProcessor(tokenizer, tokenizer, catalog, max_history_length=value)


def test_missing_tokenizers_and_catalog(tokenizer):
    with pytest.raises(ValueError, match="needs both `tokenizer` and `text_encoder_tokenizer`"):
        ALLMRecProcessor(tokenizer, None)
    processor = ALLMRecProcessor(tokenizer, tokenizer)
    with pytest.raises(ValueError, match="has no catalog"):
        processor(histories=[[1]])
    with pytest.raises(ValueError, match="has no catalog"):
        processor.tokenize_item_texts([1])


def test_tensor_inputs_equal_list_inputs(processor):
    as_lists = processor(histories=[[1, 2], [3, 4]], candidates=[[5, 6], [7, 8]], targets=[6, 7])
    as_tensors = processor(
        histories=torch.tensor([[1, 2], [3, 4]]),
        candidates=torch.tensor([[5, 6], [7, 8]]),
        targets=torch.tensor([6, 7]),
    )
    assert as_lists.keys() == as_tensors.keys()
    for key in as_lists:
        assert torch.equal(as_lists[key], as_tensors[key]), key


# ---------------------------------------------------------------------------------------------- ranking prompt
def test_ranking_inputs_show_each_item_with_its_embedding_and_output_token(tokenizer, catalog):
    from allmrec_hf.processing_allmrec import OUTPUT_TOKEN

    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=PromptTemplate.with_titles())
    batch = processor.ranking_inputs([[1, 2, 3], []], targets=[4, 5])
    text = decoded_prompt(processor, batch, 0)
    assert text.count(OUTPUT_TOKEN) == 3 and text.count(HISTORY_TOKEN) == 3
    assert text.index(title(1)) < text.index(title(2)) < text.index(title(3))
    assert decoded_prompt(processor, batch, 1).count(OUTPUT_TOKEN) == 1  # a cold user: one output token
    assert batch["item_ids"].tolist() == [[1, 2, 3], [0, 0, 0]]
    assert batch["labels"].tolist() == [[2, 3, 4], [5, 0, 0]]  # the next item after every output token
    assert batch["cf_input_ids"].tolist() == [[1, 2, 3], [0, 0, 0]]
    assert batch["attention_mask"][1, 0] == 0  # left-padded
    assert processor.output_token_id == processor.tokenizer.convert_tokens_to_ids(OUTPUT_TOKEN)
    assert processor.output_token_id not in processor.placeholder_token_ids.values()


def test_ranking_inputs_show_only_the_last_ranking_history_length_items(tokenizer, catalog):
    template = PromptTemplate(ranking_history_length=2)
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=template)
    batch = processor.ranking_inputs([[1, 2, 3, 4]], targets=[5])
    assert batch["item_ids"].tolist() == [[3, 4]] and batch["labels"].tolist() == [[4, 5]]
    assert batch["cf_input_ids"].tolist() == [[1, 2, 3, 4]]  # the CF encoder still reads the whole history


def test_ranking_inputs_without_embeddings_have_no_item_placeholders(tokenizer, catalog):
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=PromptTemplate.without_embeddings())
    batch = processor.ranking_inputs([[1, 2]])
    assert HISTORY_TOKEN not in decoded_prompt(processor, batch) and batch["item_ids"].numel() == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"ranking_item": ' "{title}"{item}'}, "ranking_item must contain"),
        ({"ranking_prompt": "no history"}, "ranking_prompt must contain"),
        ({"ranking_history_length": 0}, "ranking_history_length must be a positive integer"),
    ],
)
def test_bad_ranking_templates_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        PromptTemplate(**overrides)


def test_ranking_history_longer_than_the_cf_history_is_refused(tokenizer, catalog):
    template = PromptTemplate(ranking_history_length=60)
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=template)
    with pytest.raises(ValueError, match=r"ranking_history_length \(60\) exceeds max_history_length \(50\)"):
        processor.ranking_inputs([[1, 2]])


def test_ranking_inputs_name_a_bad_item(processor):
    with pytest.raises(KeyError, match=f"history item \\(row 0\\) {NUM_ITEMS + 5} is not in the catalog"):
        processor.ranking_inputs([[1, NUM_ITEMS + 5]])


def test_ranking_item_text_shows_catalog_fields_and_saves_with_the_processor(tokenizer, catalog, tmp_path):
    template = PromptTemplate.with_titles(ranking_item_text="{title}, {description}")
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=template)
    assert processor.ranking_item_text(2) == f"{title(2)}, {catalog.field(2, 'description')}"
    assert processor.ranking_item_text(4) == title(4)  # item 4 has no description: the separator goes with it
    titled = PromptTemplate.with_titles()
    plain = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=titled).ranking_inputs([[1, 2]])
    shown = processor.ranking_inputs([[1, 2]])
    assert shown["input_ids"].shape[1] > plain["input_ids"].shape[1]
    assert shown["item_ids"].tolist() == plain["item_ids"].tolist()  # the same placeholders and output tokens
    processor.save_pretrained(tmp_path)
    assert ALLMRecProcessor.from_pretrained(tmp_path).prompt_template.ranking_item_text == "{title}, {description}"


def test_ranking_item_text_naming_a_missing_field_is_refused(tokenizer, catalog):
    processor = ALLMRecProcessor(
        tokenizer, tokenizer, catalog, prompt_template=PromptTemplate.with_titles(ranking_item_text="{title} {genre}")
    )
    with pytest.raises(ValueError, match=r"names the field \{genre\}.*it has: description, item_id, title"):
        processor.ranking_inputs([[1, 2]])
    with pytest.raises(ValueError, match="ranking_item_text must contain"):
        PromptTemplate(ranking_item_text="{description}")


def test_ranking_inputs_without_titles_show_item_embeddings_alone(tokenizer, catalog):
    from allmrec_hf.processing_allmrec import OUTPUT_TOKEN

    assert PromptTemplate().ranking_item == PromptTemplate.without_titles().ranking_item  # the default
    bare = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=PromptTemplate.without_titles())
    processor = ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=PromptTemplate.with_titles())
    batch = bare.ranking_inputs([[1, 2, 3]], targets=[4])
    text = decoded_prompt(bare, batch)
    assert text.count(HISTORY_TOKEN) == 3 and text.count(OUTPUT_TOKEN) == 3
    assert not any(title(i) in text for i in (1, 2, 3))
    full = processor.ranking_inputs([[1, 2, 3]], targets=[4])
    for key in ("item_ids", "labels", "cf_input_ids"):  # the same items, labels and CF histories as with titles
        assert batch[key].tolist() == full[key].tolist(), key
    assert batch["input_ids"].shape[1] < full["input_ids"].shape[1]
    with pytest.raises(ValueError, match="at least one of '\\{title\\}' and '\\{item\\}'"):
        PromptTemplate(ranking_item=" {output}")
