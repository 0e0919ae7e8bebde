"""The model types `engine export` and `engine adopt` are tested on, in one place: the export and adopt warn on any
other type (it may work, but nothing here has checked it), the manifest says why attention was left unfused,
README's supported-models table lists these rows, and tests/test_architectures.py holds each one (a tiny random
checkpoint per type, tests/checkpoints.py: fp32 parity with the transformers pipeline, int8 through the export's
gate, adopt of a plain ONNX export of it).

Fusion: fuse.FUSED_MODEL_TYPES. Pruning: every type whose head reads the first token (all but BART, which pools its
last EOS token); the export keeps a pruned graph only when its logits match the unpruned one's.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.export.graph.fuse import FUSED_MODEL_TYPES


@dataclass(frozen=True)
class Tested:
    architecture: str  # the transformers class of the tested checkpoints
    tokenizer: str  # the tokenizer family (tokenizer.json model)
    checkpoint: str  # its builder in tests/checkpoints.py


TESTED: dict[str, Tested] = {
    "bert": Tested("BertForSequenceClassification", "WordPiece", "bert"),
    "distilbert": Tested("DistilBertForSequenceClassification", "WordPiece", "distilbert"),
    "roberta": Tested("RobertaForSequenceClassification", "byte-level BPE", "roberta"),
    "xlm-roberta": Tested("XLMRobertaForSequenceClassification", "SentencePiece Unigram", "xlm-roberta"),
    "camembert": Tested("CamembertForSequenceClassification", "SentencePiece Unigram", "camembert"),
    "electra": Tested("ElectraForSequenceClassification", "WordPiece", "electra"),
    "deberta-v2": Tested("DebertaV2ForSequenceClassification (DeBERTa-v3)", "SentencePiece Unigram", "deberta-v3"),
    "modernbert": Tested("ModernBertForSequenceClassification", "byte-level BPE", "modernbert"),
    "bart": Tested("BartForSequenceClassification", "byte-level BPE", "bart-nli"),
}


def untested(model_type: str) -> str | None:
    """The warning for a model type nothing here has tested, or None."""
    if model_type in TESTED:
        return None
    return (
        f"model type {model_type!r} has not been tested with this export (tested: {', '.join(sorted(TESTED))}); "
        "the checks below still compare every graph with the reference, but read their figures with care"
    )


def fusion_note(model_type: str, fused: int) -> str:
    """What the manifest says about the attention fusion."""
    if fused:
        return f"fused ({fused} layers)"
    if model_type not in FUSED_MODEL_TYPES:
        return f"not fused: the fusion is not written for model type {model_type!r} (engine/export/graph/fuse.py)"
    return "not fused: no attention core matched, or the fused graph did not keep parity"
