"""The per-dataset configuration files of examples/paper_configs/ (docs/reproducing.md): each one parses through its
example script's own argument parsing (HfArgumentParser, unknown keys refused), holds the paper's settings, and
the stages of one dataset point at each other's folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import HfArgumentParser

from allmrec_hf.data import get_preset
from training_helpers import REPO, example_module

CONFIGS = REPO / "examples" / "paper_configs"
DATASETS = {  # the paper's thresholds (Table 2), beta (stage 1) and prompt words
    "Movies_and_TV": (5, None, 0.5, ("movie", "watch", "watched")),
    "Video_Games": (5, None, 0.5, ("game", "play", "played")),
    "Luxury_Beauty": (4, 3.0, 0.2, ("item", "buy", "bought")),
    "Toys_and_Games": (4, 3.0, 0.2, ("item", "buy", "bought")),
}
SCRIPTS = {  # config file -> example script
    "prepare_data.json": "prepare_data",
    "pretrain_cf.json": "pretrain_cf",
    "train_stage1.json": "train_stage1",
    "train_stage2.json": "train_stage2",
    "train_stage2_mlp_llm.json": "train_stage2",
    "train_stage2_llm_only.json": "train_stage2",
    "evaluate.json": "evaluate",
}


class _Parsed(Exception):
    """Stops a script right after it parsed its arguments."""


def parse_with_script(script: str, path: Path, monkeypatch) -> dict:
    """Run `examples/<script>.py main([path])` up to its argument parsing; return every parsed field."""
    original = HfArgumentParser.parse_json_file
    parsed = []

    def parse_then_stop(self, json_file, allow_extra_keys=False):
        parsed.extend(original(self, json_file, allow_extra_keys=allow_extra_keys))
        raise _Parsed

    with monkeypatch.context() as patch, pytest.raises(_Parsed):
        patch.setattr(HfArgumentParser, "parse_json_file", parse_then_stop)
        example_module(script).main([str(path)])
    values = {}
    for arguments in parsed:
        values.update(vars(arguments))
    return values


def test_every_dataset_has_every_config():
    assert sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()) == sorted(DATASETS)
    for dataset in DATASETS:
        assert sorted(p.name for p in (CONFIGS / dataset).glob("*.json")) == sorted(SCRIPTS), dataset


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_configs_parse_into_the_scripts_arguments(dataset, monkeypatch):
    min_interactions, min_rating, beta, (noun, verb, past_verb) = DATASETS[dataset]
    args = {}
    for name, script in SCRIPTS.items():
        path = CONFIGS / dataset / name
        values = parse_with_script(script, path, monkeypatch)
        for key, value in json.loads(path.read_text()).items():  # every key reached a field, unchanged
            assert key in values and values[key] == value, (name, key)
        args[name] = values

    preset = get_preset(args["prepare_data.json"]["preset"])
    assert (preset.min_interactions, preset.min_rating, preset.kcore) == (min_interactions, min_rating, "one_pass")
    assert args["prepare_data.json"]["num_negatives"] == 19
    assert args["prepare_data.json"]["negative_sampling"] == "uniform"
    cf = args["pretrain_cf.json"]
    assert (cf["hidden_size"], cf["max_length"], cf["num_hidden_layers"], cf["num_attention_heads"]) == (50, 50, 2, 1)
    assert (cf["dropout"], cf["learning_rate"], cf["adam_beta2"]) == (0.5, 1e-3, 0.98)
    assert (cf["per_device_train_batch_size"], cf["num_train_epochs"]) == (128, 200)
    stage1 = args["train_stage1.json"]
    assert (stage1["latent_size"], stage1["alpha"], stage1["beta"], stage1["all_positions"]) == (128, 0.5, beta, False)
    assert (stage1["learning_rate"], stage1["per_device_train_batch_size"]) == (1e-4, 32)
    assert stage1["num_train_epochs"] == 10
    for name in ("train_stage2.json", "train_stage2_mlp_llm.json", "train_stage2_llm_only.json"):
        stage2 = args[name]
        assert stage2["llm"] == "facebook/opt-6.7b" and stage2["num_candidates"] == 20
        assert (stage2["noun"], stage2["verb"], stage2["past_verb"]) == (noun, verb, past_verb)
        assert stage2["prompt_history_length"] == 10
    for name in ("train_stage2.json", "train_stage2_mlp_llm.json"):
        assert (args[name]["learning_rate"], args[name]["per_device_train_batch_size"]) == (1e-4, 4)
        assert args[name]["num_train_epochs"] == 5
    assert args["train_stage2_mlp_llm.json"]["baseline"] == "mlp_llm"
    assert args["train_stage2_llm_only.json"]["baseline"] == "llm_only"

    # Each stage reads what the previous one wrote.
    data = args["prepare_data.json"]["output_dir"]
    for name in SCRIPTS:
        if name != "prepare_data.json":
            assert args[name]["dataset_dir"] == data, name
    assert stage1["cf_model_path"] == cf["output_dir"]
    assert args["train_stage2.json"]["stage1_model_path"] == stage1["output_dir"]
    assert args["train_stage2_mlp_llm.json"]["cf_model_path"] == cf["output_dir"]
    evaluation = args["evaluate.json"]
    assert evaluation["cf_model_path"] == cf["output_dir"]
    assert evaluation["allmrec_model_path"] == args["train_stage2.json"]["output_dir"]
    assert evaluation["mlp_llm_model_path"] == args["train_stage2_mlp_llm.json"]["output_dir"]
    assert evaluation["llm_only_model_path"] == args["train_stage2_llm_only.json"]["output_dir"]
