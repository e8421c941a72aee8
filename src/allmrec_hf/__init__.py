"""allmrec-hf: A-LLMRec (KDD 2024) as Hugging Face transformers models, processors and checkpoints."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .catalog import ItemCatalog, normalize_title
from .configuration_allmrec import ALLMRecAlignerConfig, ALLMRecConfig
from .configuration_sasrec import SASRecConfig
from .modeling_allmrec import (
    ALLMRecAlignerModel,
    ALLMRecAlignerOutput,
    ALLMRecCausalLMOutput,
    ALLMRecForConditionalGeneration,
    ALLMRecProjector,
)
from .modeling_sasrec import SASRecModel, SASRecOutput
from .pipelines import NextItemRecommendationPipeline
from .processing_allmrec import ALLMRecProcessor, CandidateMatch, PromptTemplate

__version__ = "0.1.0"

AutoConfig.register("sasrec", SASRecConfig, exist_ok=True)
AutoConfig.register("allmrec_aligner", ALLMRecAlignerConfig, exist_ok=True)
AutoConfig.register("allmrec", ALLMRecConfig, exist_ok=True)
AutoModel.register(SASRecConfig, SASRecModel, exist_ok=True)
AutoModel.register(ALLMRecAlignerConfig, ALLMRecAlignerModel, exist_ok=True)
AutoModelForCausalLM.register(ALLMRecConfig, ALLMRecForConditionalGeneration, exist_ok=True)
AutoProcessor.register(ALLMRecConfig, ALLMRecProcessor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "next-item-recommendation",
    pipeline_class=NextItemRecommendationPipeline,
    pt_model=AutoModelForCausalLM,
    type="multimodal",
)

# Saved folders carry the model code, so they load with `trust_remote_code=True` without this package.
SASRecConfig.register_for_auto_class()
SASRecModel.register_for_auto_class("AutoModel")
ALLMRecAlignerConfig.register_for_auto_class()
ALLMRecAlignerModel.register_for_auto_class("AutoModel")
ALLMRecConfig.register_for_auto_class()
ALLMRecForConditionalGeneration.register_for_auto_class("AutoModelForCausalLM")
ALLMRecProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "ALLMRecAlignerConfig",
    "ALLMRecAlignerModel",
    "ALLMRecAlignerOutput",
    "ALLMRecCausalLMOutput",
    "ALLMRecConfig",
    "ALLMRecForConditionalGeneration",
    "ALLMRecProcessor",
    "ALLMRecProjector",
    "CandidateMatch",
    "ItemCatalog",
    "NextItemRecommendationPipeline",
    "PromptTemplate",
    "SASRecConfig",
    "SASRecModel",
    "SASRecOutput",
    "__version__",
    "normalize_title",
]
