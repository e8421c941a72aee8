"""allmrec-hf: A-LLMRec (KDD 2024) as Hugging Face transformers models, processors and checkpoints."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .catalog import ItemCatalog, normalize_title
from .cf_models import CFConfig, CFModel, check_cf_model, known_cf_model_types, register_cf_model
from .configuration_allmrec import ALLMRecAlignerConfig, ALLMRecConfig, ALLMRecRankingConfig
from .configuration_gru4rec import GRU4RecConfig
from .configuration_nextitnet import NextItNetConfig
from .configuration_sasrec import SASRecConfig
from .modeling_allmrec import (
    ALLMRecAlignerModel,
    ALLMRecAlignerOutput,
    ALLMRecCausalLMOutput,
    ALLMRecForConditionalGeneration,
    ALLMRecProjector,
)
from .modeling_allmrec_ranking import ALLMRecForItemRanking, ALLMRecRankingOutput
from .modeling_cf_common import SequentialCFMixin, SequentialCFOutput
from .modeling_gru4rec import GRU4RecModel
from .modeling_nextitnet import NextItNetModel
from .modeling_sasrec import SASRecModel, SASRecOutput
from .pipelines import NextItemRecommendationPipeline
from .processing_allmrec import ALLMRecProcessor, CandidateMatch, PromptTemplate
from .version import __version__

AutoConfig.register("sasrec", SASRecConfig, exist_ok=True)
AutoConfig.register("gru4rec", GRU4RecConfig, exist_ok=True)
AutoConfig.register("nextitnet", NextItNetConfig, exist_ok=True)
AutoConfig.register("allmrec_aligner", ALLMRecAlignerConfig, exist_ok=True)
AutoConfig.register("allmrec", ALLMRecConfig, exist_ok=True)
AutoConfig.register("allmrec_ranking", ALLMRecRankingConfig, exist_ok=True)
AutoModel.register(SASRecConfig, SASRecModel, exist_ok=True)
AutoModel.register(GRU4RecConfig, GRU4RecModel, exist_ok=True)
AutoModel.register(NextItNetConfig, NextItNetModel, exist_ok=True)
AutoModel.register(ALLMRecAlignerConfig, ALLMRecAlignerModel, exist_ok=True)
AutoModelForCausalLM.register(ALLMRecConfig, ALLMRecForConditionalGeneration, exist_ok=True)
AutoProcessor.register(ALLMRecConfig, ALLMRecProcessor, exist_ok=True)
AutoModel.register(ALLMRecRankingConfig, ALLMRecForItemRanking, exist_ok=True)
AutoProcessor.register(ALLMRecRankingConfig, ALLMRecProcessor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "next-item-recommendation",
    pipeline_class=NextItemRecommendationPipeline,
    pt_model=AutoModelForCausalLM,
    type="multimodal",
)

# Saved folders carry the model code, so they load with `trust_remote_code=True` without this package.
SASRecConfig.register_for_auto_class()
SASRecModel.register_for_auto_class("AutoModel")
GRU4RecConfig.register_for_auto_class()
GRU4RecModel.register_for_auto_class("AutoModel")
NextItNetConfig.register_for_auto_class()
NextItNetModel.register_for_auto_class("AutoModel")
ALLMRecAlignerConfig.register_for_auto_class()
ALLMRecAlignerModel.register_for_auto_class("AutoModel")
ALLMRecConfig.register_for_auto_class()
ALLMRecForConditionalGeneration.register_for_auto_class("AutoModelForCausalLM")
ALLMRecProcessor.register_for_auto_class("AutoProcessor")
ALLMRecRankingConfig.register_for_auto_class()
ALLMRecForItemRanking.register_for_auto_class("AutoModel")

__all__ = [
    "ALLMRecAlignerConfig",
    "ALLMRecAlignerModel",
    "ALLMRecAlignerOutput",
    "ALLMRecCausalLMOutput",
    "ALLMRecConfig",
    "ALLMRecForItemRanking",
    "ALLMRecRankingConfig",
    "ALLMRecRankingOutput",
    "ALLMRecForConditionalGeneration",
    "ALLMRecProcessor",
    "ALLMRecProjector",
    "CFConfig",
    "CFModel",
    "CandidateMatch",
    "GRU4RecConfig",
    "GRU4RecModel",
    "ItemCatalog",
    "NextItNetConfig",
    "NextItNetModel",
    "NextItemRecommendationPipeline",
    "PromptTemplate",
    "SASRecConfig",
    "SASRecModel",
    "SASRecOutput",
    "SequentialCFMixin",
    "SequentialCFOutput",
    "__version__",
    "check_cf_model",
    "known_cf_model_types",
    "normalize_title",
    "register_cf_model",
]
