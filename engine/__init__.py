"""Local, offline text classification and zero-shot classification on ONNX Runtime.

Run time needs only onnxruntime, tokenizers and numpy; models are made by `engine export` (engine/export/,
imported only by that command) or adopted from ready-made ONNX exports by `engine adopt`.
"""

__version__ = "0.2.0"  # the package's one version (pyproject reads it); recorded in every manifest's "tools"

from engine.errors import (
    EngineError,
    InferenceError,
    IntegrityError,
    InvalidRequestError,
    ModelLoadError,
    TextTooLongError,
)
from engine.jobs.file_job import ScoreSummary, score_file
from engine.jobs.scoring import ScoredRow, ScoringOptions, score_records
from engine.runtime.postprocess import Activation
from engine.serve.wire import CloudflareTextClassificationInput
from engine.tasks.inputs import LabeledText, TextPair
from engine.tasks.params import (
    ClassificationOutput,
    TextClassificationInput,
    TextClassificationParameters,
    ZeroShotClassificationInput,
    ZeroShotClassificationParameters,
    ZeroShotPipelineOutput,
)
from engine.tasks.rerank import Reranker, RerankResult
from engine.tasks.text_classification import Prediction, TextClassifier
from engine.tasks.zero_shot import ZeroShotClassifier, ZeroShotPrediction

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
    "__version__",
    "score_file",
    "score_records",
]
