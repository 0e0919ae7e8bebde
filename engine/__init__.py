"""Local, offline text classification and zero-shot classification on ONNX Runtime.

Run time needs only onnxruntime, tokenizers and numpy; models are made by `engine export` (engine/export/,
imported only by that command) or adopted from ready-made ONNX exports by `engine adopt`.
"""

from .errors import (
    EngineError,
    InferenceError,
    IntegrityError,
    InvalidRequestError,
    ModelLoadError,
    TextTooLongError,
)
from .file_job import ScoreSummary, score_file
from .postprocess import Activation
from .rerank import Reranker, RerankResult
from .scoring import ScoredRow, ScoringOptions, score_records
from .spec import (
    ClassificationOutput,
    CloudflareTextClassificationInput,
    LabeledText,
    TextClassificationInput,
    TextClassificationParameters,
    TextPair,
    ZeroShotClassificationInput,
    ZeroShotClassificationParameters,
    ZeroShotPipelineOutput,
)
from .text_classification import Prediction, TextClassifier
from .zero_shot import ZeroShotClassifier, ZeroShotPrediction

__all__ = [
    "Activation",
    "ClassificationOutput",
    "CloudflareTextClassificationInput",
    "EngineError",
    "InferenceError",
    "IntegrityError",
    "InvalidRequestError",
    "LabeledText",
    "ModelLoadError",
    "Prediction",
    "RerankResult",
    "Reranker",
    "ScoreSummary",
    "ScoredRow",
    "ScoringOptions",
    "TextClassificationInput",
    "TextClassificationParameters",
    "TextClassifier",
    "TextPair",
    "TextTooLongError",
    "ZeroShotClassificationInput",
    "ZeroShotClassificationParameters",
    "ZeroShotClassifier",
    "ZeroShotPipelineOutput",
    "ZeroShotPrediction",
    "score_file",
    "score_records",
]
