"""Free-form generation about users (`processor.instruct` + `model.generate`), as in the paper's genre demo."""

from __future__ import annotations

import pytest
import torch

from allmrec_hf.processing_allmrec import CANDIDATE_TOKEN, HISTORY_TOKEN, USER_TOKEN
from conftest import build_model

INSTRUCTION = "Describe this user's favourite genres."


def decoded(processor, batch, row):
    return processor.tokenizer.decode(batch["input_ids"][row][batch["attention_mask"][row] == 1])


def test_instruct_prompt_with_the_user_representation_only(processor):
    batch = processor.instruct([[1, 2, 3], []], INSTRUCTION)
    for row in range(2):
        text = decoded(processor, batch, row)
        assert text.count(USER_TOKEN) == 1 and HISTORY_TOKEN not in text and CANDIDATE_TOKEN not in text
        assert text.rstrip().endswith(INSTRUCTION)
    assert batch["cf_input_ids"].tolist() == [[1, 2, 3], [0, 0, 0]]  # the CF encoder still sees the history
    assert batch["item_ids"].shape == (2, 0) and batch["item_ids"].dtype == torch.long


def test_instruct_prompt_with_the_history(processor):
    history = [1, 2, 3]
    batch = processor.instruct([history], INSTRUCTION, include_history=True)
    text = decoded(processor, batch, 0)
    assert text.count(HISTORY_TOKEN) == 3
    for item in history:
        assert processor.catalog.title(item) in text
    assert batch["item_ids"].tolist() == [history]
    assert "This user has watched" in text and text.rstrip().endswith(INSTRUCTION)


def test_instruct_refuses_an_empty_instruction_and_unknown_items(processor):
    with pytest.raises(ValueError, match="instruction must be a non-empty string"):
        processor.instruct([[1]], "  ")
    with pytest.raises(Exception, match="history item"):
        processor.instruct([[999]], INSTRUCTION)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_generate_from_an_instruction(processor, family):
    model = build_model(family, processor)
    for include_history in (False, True):
        batch = processor.instruct([[1, 2, 3], [4]], INSTRUCTION, include_history=include_history)
        out = model.generate(**batch, max_new_tokens=5, do_sample=False)
        assert out.shape[0] == 2 and 1 <= out.shape[1] <= 5
        assert len(processor.batch_decode(out, skip_special_tokens=True)) == 2
    # The user representation conditions the answer: another history changes the first step's logits.
    a = processor.instruct([[1, 2, 3]], INSTRUCTION)
    b = processor.instruct([[7, 8, 9]], INSTRUCTION)
    with torch.no_grad():
        logits_a = model(**a).logits[:, -1]
        logits_b = model(**b).logits[:, -1]
    assert not torch.allclose(logits_a, logits_b)
