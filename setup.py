"""Packaging for allmrec-hf."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.abspath(os.path.dirname(__file__))
README = os.path.join(HERE, "README.md")

with open(os.path.join(HERE, "src", "allmrec_hf", "version.py"), encoding="utf-8") as fh:
    VERSION = re.search(r'^__version__ = "([^"]+)"', fh.read(), re.M).group(1)

long_description = ""
if os.path.exists(README):
    with open(README, encoding="utf-8") as fh:
        long_description = fh.read()

TEST_REQUIRES = ["pytest", "ruff", "evaluate>=0.4"]
GGUF_REQUIRES = ["gguf>=0.10"]
# LoRA on the LM (`--lora_r`): peft's model-level API with `get_peft_model_state_dict(save_embedding_layers=)`
# needs 0.7; peft 0.16 and 0.17 do not import with transformers 5 (they import the removed `HybridCache`).
LORA_REQUIRES = ["peft>=0.7,!=0.16.*,!=0.17.*"]
# The evaluation script's plots (examples/evaluate.py, the quickstart).
PLOT_REQUIRES = ["matplotlib>=3.7"]
# The documentation site (`make docs`: mkdocs.yml, docs/).
DOCS_REQUIRES = ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "mkdocstrings>=1.0,<2", "mkdocstrings-python>=2.0,<3"]

setup(
    name="allmrec-hf",
    version=VERSION,
    description="A-LLMRec (LLM-based recommendation) on Hugging Face transformers",
    long_description=long_description,
    long_description_content_type="text/markdown",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=False,
    package_data={"allmrec_hf": ["model_cards/*.md"]},  # the model-card templates (allmrec_hf.model_card)
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=5.24,<6",
        "accelerate>=1.0",
        "safetensors>=0.4",
        "huggingface_hub>=1.0",
        "numpy>=1.24",
        "tqdm",
        "datasets>=3.0",
        "pandas>=2.2",
        "pyarrow>=15",
        "Jinja2>=3.0",  # model cards (huggingface_hub's ModelCard templates)
    ],
    extras_require={
        "test": TEST_REQUIRES,
        "gguf": GGUF_REQUIRES,
        "lora": LORA_REQUIRES,
        "plots": PLOT_REQUIRES,
        "docs": DOCS_REQUIRES,
        "dev": TEST_REQUIRES + GGUF_REQUIRES + LORA_REQUIRES + PLOT_REQUIRES,
    },
)
