"""The Hub round trip without the Hub: `allmrec_hf.hub.push_to_hub` runs up to the upload, `HfApi.create_repo` /
`create_commit` are replaced by a fake that writes each commit into a local cache laid out like huggingface_hub's
(`models--org--name/snapshots/<commit>/`, `refs/main`), and the repo is then loaded *by its id* from that cache,
offline: in this process with `allmrec_hf`, and in a fresh process with plain transformers and
`trust_remote_code=True`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard
from huggingface_hub.hf_api import RepoUrl
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from allmrec_hf import ALLMRecForConditionalGeneration, ALLMRecProcessor
from allmrec_hf.hub import prepare_upload, push_to_hub
from allmrec_hf.model_card import write_model_card
from conftest import build_model
from training_helpers import example_module

LM_REPO = "tiny-org/tiny-llama"
REPO = "tiny-org/a-llmrec-tiny"
HISTORIES = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10]]
CANDIDATES = [[4, 5, 6, 20], [16, 17, 18, 21]]
CODE = ["configuration_allmrec.py", "modeling_allmrec.py", "modeling_sasrec.py", "processing_allmrec.py", "catalog.py"]


class FakeHub:
    """`HfApi.create_repo`, `create_branch` and `create_commit` for a Hub that lives in the local cache `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.repos: list[str] = []
        self.commits: list[dict] = []

    def snapshot(self, repo_id: str, revision: str = "main") -> Path:
        repo = self.root / f"models--{repo_id.replace('/', '--')}"
        return repo / "snapshots" / (repo / "refs" / revision).read_text()

    def commit(self, repo_id: str, files: dict[str, bytes], message: str, revision: str = "main") -> str:
        repo = self.root / f"models--{repo_id.replace('/', '--')}"
        ref = repo / "refs" / revision
        previous = repo / "snapshots" / ref.read_text() if ref.exists() else None
        oid = hashlib.sha1(repr((sorted(files.items()), message, len(self.commits))).encode()).hexdigest()
        snapshot = repo / "snapshots" / oid
        if previous is not None:
            shutil.copytree(previous, snapshot)
        for path, data in files.items():
            (snapshot / path).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / path).write_bytes(data)
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(oid)
        self.commits.append({"repo_id": repo_id, "files": sorted(files), "message": message, "revision": revision})
        return oid

    def publish_folder(self, repo_id: str, folder: Path) -> None:
        """A repo uploaded by someone else (the base LM)."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        self.commit(repo_id, files, "upload")

    # --------------------------------------------------------------------------------- HfApi replacements
    def create_repo(self, api, repo_id, *, exist_ok=False, **kwargs):
        assert exist_ok, "push_to_hub must not fail on an existing repo"
        self.repos.append(repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, api, repo_id, *, branch, **kwargs):
        return None

    def create_commit(self, api, repo_id, operations, *, commit_message, revision=None, create_pr=None, **kwargs):
        files = {}
        for op in operations:
            source = op.path_or_fileobj
            files[op.path_in_repo] = source if isinstance(source, bytes) else Path(source).read_bytes()
        oid = self.commit(repo_id, files, commit_message, revision or "main")
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}",
            commit_message=commit_message,
            commit_description="",
            oid=oid,
        )


@pytest.fixture
def hub(tmp_path, monkeypatch) -> FakeHub:
    fake = FakeHub(tmp_path / "hub_cache")
    for name in ("create_repo", "create_branch", "create_commit"):
        method = getattr(fake, name)
        monkeypatch.setattr(HfApi, name, lambda api, *args, _m=method, **kwargs: _m(api, *args, **kwargs))
    return fake


@pytest.fixture
def trained(processor, tmp_path, hub):
    """A tiny recommender whose LM is published as `LM_REPO`, saved the way examples/train_stage2.py saves it,
    with what a training run leaves next to it."""
    model = build_model("llama", processor)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the projectors away from their initialisation
        for parameter in [*model.user_projector.parameters(), *model.item_projector.parameters()]:
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    lm_folder = tmp_path / "lm"
    model.language_model.save_pretrained(lm_folder)
    processor.tokenizer.save_pretrained(lm_folder)
    hub.publish_folder(LM_REPO, lm_folder)
    model.config.base_model_name_or_path = LM_REPO
    folder = tmp_path / "stage2"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "all_results.json").write_text(json.dumps({"dataset_dir": str(tmp_path), "train_loss": 1.0}))
    write_model_card("recommender", folder, model=model, strict=True)
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"0")
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out.tfevents").write_bytes(b"0")
    return model, folder


def expected_scores(model, processor) -> torch.Tensor:
    return model.score_candidates(**processor(histories=HISTORIES, candidates=CANDIDATES))


def uploaded_weight_keys(snapshot: Path) -> list[str]:
    with safe_open(snapshot / "model.safetensors", "pt") as handle:
        return list(handle.keys())


def test_push_uploads_everything_but_the_language_model(trained, hub):
    model, folder = trained
    commit = push_to_hub(REPO, folder)
    assert hub.repos == [REPO] and commit.oid and commit.commit_url.startswith(f"https://huggingface.co/{REPO}/")
    assert len([c for c in hub.commits if c["repo_id"] == REPO]) == 1  # one commit with everything
    snapshot = hub.snapshot(REPO)
    uploaded = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    for name in ["config.json", "model.safetensors", "README.md", "item_catalog.jsonl", "processor_config.json"]:
        assert name in uploaded, name
    assert "text_encoder_tokenizer/tokenizer_config.json" in uploaded and set(CODE) <= uploaded
    assert not any(p.startswith(("checkpoint-", "runs/")) or p == "all_results.json" for p in uploaded), uploaded

    keys = uploaded_weight_keys(snapshot)
    assert any(k.startswith("user_projector.") for k in keys) and any(k.startswith("recommender.") for k in keys)
    assert not any(k.startswith("language_model.") for k in keys)
    lm_bytes = sum(p.numel() * p.element_size() for p in model.language_model.parameters())
    assert (snapshot / "model.safetensors").stat().st_size < sum(
        p.numel() * p.element_size() for p in model.parameters()
    ) - lm_bytes / 2

    config = json.loads((snapshot / "config.json").read_text())
    assert config["base_model_name_or_path"] == LM_REPO and config["language_model_included"] is False
    card = ModelCard.load(snapshot / "README.md")
    assert card.data.base_model == LM_REPO and card.data.base_model_relation == "adapter"
    assert card.data.library_name == "transformers" and "a-llmrec" in card.data.tags
    assert f"checkpoint = {REPO!r}" in card.text  # the loading code names the repo, not the local folder
    assert str(folder) not in card.text


def test_repo_loads_by_id_with_allmrec_hf(trained, hub, processor):
    model, folder = trained
    push_to_hub(REPO, folder)
    expected = expected_scores(model, processor)
    cache = str(hub.root)
    loaded_processor = ALLMRecProcessor.from_pretrained(REPO, cache_dir=cache)
    assert loaded_processor.catalog.titles == processor.catalog.titles
    for loader in (ALLMRecForConditionalGeneration, AutoModelForCausalLM):
        loaded = loader.from_pretrained(REPO, cache_dir=cache)
        assert isinstance(loaded, ALLMRecForConditionalGeneration)
        assert loaded.config.base_model_name_or_path == LM_REPO
        torch.testing.assert_close(expected_scores(loaded, loaded_processor), expected, rtol=1e-5, atol=1e-5)
    recs = loaded.recommend(loaded_processor, [HISTORIES[0]], k=2, num_retrieved=4)
    original = model.recommend(processor, [HISTORIES[0]], k=2, num_retrieved=4)
    assert [r["item_id"] for r in recs[0]] == [r["item_id"] for r in original[0]]


def test_repo_loads_by_id_in_a_fresh_process_with_plain_transformers(trained, hub, processor, tmp_path):
    model, folder = trained
    push_to_hub(REPO, folder)
    expected = expected_scores(model, processor)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["allmrec_hf"] = None  # the package must not be needed
        from transformers import AutoModelForCausalLM, AutoProcessor
        processor = AutoProcessor.from_pretrained({REPO!r}, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained({REPO!r}, trust_remote_code=True)
        batch = processor(histories={HISTORIES!r}, candidates={CANDIDATES!r})
        print(type(model).__module__, model.config.base_model_name_or_path, processor.catalog.num_items)
        print(model.score_candidates(**batch).tolist())
    """)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(hub.root),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    described, scores = result.stdout.strip().splitlines()[-2:]
    module, base_model, num_items = described.split()
    assert module.startswith("transformers_modules.") and base_model == LM_REPO
    assert int(num_items) == processor.catalog.num_items
    torch.testing.assert_close(torch.tensor(eval(scores)), expected, rtol=1e-5, atol=1e-5)


def test_push_model_and_processor_from_memory(trained, hub, processor):
    model, _ = trained
    push_to_hub(REPO, model=model, processor=processor, commit_message="first version")
    assert hub.commits[-1]["message"] == "first version"
    snapshot = hub.snapshot(REPO)
    assert not any(k.startswith("language_model.") for k in uploaded_weight_keys(snapshot))
    card = ModelCard.load(snapshot / "README.md")
    assert card.data.base_model == LM_REPO and f"checkpoint = {REPO!r}" in card.text
    assert (snapshot / "item_catalog.jsonl").exists() and (snapshot / "processor_config.json").exists()
    with pytest.raises(ValueError, match="processor"):
        push_to_hub(REPO, model=model)


def _self_contained(model, processor, folder):
    model.save_pretrained(folder / "full", include_language_model=True)
    processor.save_pretrained(folder / "full")
    return folder / "full"


def _local_lm(model, processor, folder):
    model.config.base_model_name_or_path = str(folder / "some_local_lm")
    model.save_pretrained(folder / "local")
    processor.save_pretrained(folder / "local")
    return folder / "local"


def _no_catalog(model, processor, folder):
    (folder / "item_catalog.jsonl").unlink()
    return folder


def _no_processor(model, processor, folder):
    (folder / "processor_config.json").unlink()
    return folder


def _other_base_model(model, processor, folder):
    card = ModelCard.load(folder / "README.md")
    card.data.base_model = "someone/another-lm"
    card.save(folder / "README.md")
    return folder


def _lm_weights_added(model, processor, folder):
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights["language_model.lm_head.weight"] = torch.zeros(2, 2)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _cf_checkpoint(model, processor, folder):
    model.recommender.cf_model.save_pretrained(folder / "cf")
    return folder / "cf"


@pytest.mark.parametrize(
    "breakage, message",
    [
        (_self_contained, "self-contained"),
        (_local_lm, "local path"),
        (_no_catalog, "item catalog is missing"),
        (_no_processor, "processor is missing"),
        (_other_base_model, "base_model is 'someone/another-lm'"),
        (_lm_weights_added, "weights of the frozen LM"),
        (_cf_checkpoint, "not an A-LLMRec recommender"),
    ],
)
def test_nothing_is_sent_for_a_checkpoint_that_cannot_be_published(trained, hub, processor, breakage, message):
    model, folder = trained
    folder = breakage(model, processor, folder)
    with pytest.raises(ValueError, match=message):
        push_to_hub(REPO, folder)
    assert hub.repos == [] and all(c["repo_id"] == LM_REPO for c in hub.commits)


def test_folder_without_a_card_gets_one(trained, hub):
    _, folder = trained
    (folder / "README.md").unlink()
    upload = prepare_upload(folder, REPO)
    assert upload.model_card.data.base_model == LM_REPO and "README.md" in upload.paths_in_repo()
    assert f"checkpoint = {REPO!r}" in upload.model_card.text


def test_push_to_hub_example(trained, hub, capsys):
    _, folder = trained
    script = example_module("push_to_hub")
    result = script.main(["--checkpoint_dir", str(folder), "--repo_id", REPO, "--dry_run"])
    assert result["commit_url"] is None and hub.repos == [] and "model.safetensors" in result["files"]
    assert "Dry run" in capsys.readouterr().out
    result = script.main(["--checkpoint_dir", str(folder), "--repo_id", REPO, "--revision", "v1"])
    assert hub.repos == [REPO] and hub.commits[-1]["revision"] == "v1"
    assert result["commit_url"].startswith(f"https://huggingface.co/{REPO}/commit/")
    assert sorted(result["files"]) == sorted(
        p.relative_to(hub.snapshot(REPO, "v1")).as_posix() for p in hub.snapshot(REPO, "v1").rglob("*") if p.is_file()
    )


def test_processor_save_pretrained_with_push_to_hub_uploads_the_catalog(processor, hub, tmp_path):
    processor.save_pretrained(str(tmp_path / "processor"), push_to_hub=True, repo_id=REPO, commit_message="proc")
    snapshot = hub.snapshot(REPO)
    assert hub.commits[-1]["message"] == "proc"
    assert (snapshot / "item_catalog.jsonl").read_text() == (tmp_path / "processor" / "item_catalog.jsonl").read_text()
    assert (snapshot / "processor_config.json").exists() and (snapshot / "tokenizer.json").exists()
