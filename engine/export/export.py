"""Export a Hugging Face sequence classifier to a self-contained, verified ONNX model directory.

    engine export SOURCE --output DIR [--precision int8|fp32] [--calibration-file F] [--zero-shot-labels A,B,...]
    engine export --list

SOURCE is a short alias (see --list), a Cloudflare model id, a Hugging Face model id, or a local checkpoint
directory. Steps: load the checkpoint with transformers, export it to ONNX (transformers 5's own exporter:
transformers_onnx.py; optimum's with transformers 4.57), fuse each layer's attention core into one onnxruntime
kernel (engine/export/fuse.py), check the fp32 graph against torch, quantize to int8 with an accuracy-aware recipe
search (engine/export/quantize.py) and check int8 against fp32 through the engine's own run time, run the last
layer after its attention on the head's token only (engine/export/prune.py, checked against the unpruned graph),
then write model.onnx + model.onnx.data (its large tensors, memory-mapped at load) + tokenizer.json +
manifest.json (sha256 of every file, tool versions, recipe, verification figures) into DIR atomically.

Needs the export extra: pip install "offline-textclf-engine[export]" (transformers 5; `[export-transformers4]` for
4.57 with optimum). torch, transformers and the exporters are imported inside the functions that use them, so
`engine adopt` reuses this module's checks and writer without them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import EngineError
from engine.export import gate, quantize, support, transformers_onnx
from engine.export.fuse import fuse_attention
from engine.export.prune import prune_to_first_token
from engine.model.aliases import ALIASES, Alias
from engine.model.fileio import fsync_dir, sha256_hex, write_atomic
from engine.model.manifest import DATA_FILE, MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, ModelInfo
from engine.runtime import postprocess

HERE = Path(__file__).resolve().parent
VERIFICATION_TEXTS = HERE / "verification_texts.txt"
FP32_ATOL = 1e-4  # torch vs ONNX fp32: same math, so only float reordering may differ
MIN_INT8_AGREEMENT = 0.99
FP32_REFERENCE = "reference/model.fp32.onnx"  # --keep-fp32: the verified fp32 graph, for `engine check`
# hypotheses of the NLI checks ("This example is {topic}."): the pipeline's default template
NLI_TOPICS = ["politics", "sports", "technology", "a complaint", "good news", "science"]
# label sets of the int8 zero-shot gate: every verification premise is ranked against each ("This example is {}.")
ZERO_SHOT_LABEL_SETS = (
    tuple(NLI_TOPICS),
    ("positive", "negative", "neutral"),
    ("a question", "a complaint", "praise", "a request"),
)
MIN_ZERO_SHOT_AGREEMENT = 0.99  # what a zero-shot user sees: the winning label, as fp32 picks it


# Position embeddings of these models start after the padding index, so the window is shorter by that offset.
PADDING_OFFSET_MODELS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text"}
# sequence-classification heads that pool the hidden state of the last EOS token (and need equal EOS counts per batch)
EOS_POOLED_MODELS = {"bart", "mbart", "plbart", "mvp", "led", "bigbird_pegasus"}


class ExportError(EngineError):
    """The export could not be done or did not pass its checks; the message says why."""


def resolve(source: str) -> tuple[str, Alias | None]:
    """Alias or Cloudflare id -> hub id; a local directory or a hub id is returned as is."""
    if source in ALIASES:
        return ALIASES[source].hub_id, ALIASES[source]
    if source.startswith("@cf/"):
        raise ExportError(f"unknown Cloudflare model id {source!r}; known ids: {[a for a in ALIASES if a[0] == '@']}")
    return source, None


def load_checkpoint(source: str) -> tuple[Any, Any, Any]:
    """(config, tokenizer, torch model) from a hub id or a local directory, with clear errors."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    local = Path(source).is_dir()
    if not local and Path(source).exists():
        raise ExportError(f"{source} is a file; SOURCE must be a checkpoint directory, a hub id or an alias")
    if local and not (Path(source) / "config.json").is_file():  # else transformers guesses a type from the name
        raise ExportError(f"{source} is not a Hugging Face checkpoint directory: it has no config.json")
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as exc:
        if local:
            raise ExportError(
                f"{source} is not a Hugging Face checkpoint directory (no usable config.json): {exc}"
            ) from exc
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = "HF_HUB_OFFLINE=1 is set" if offline else "no network, or no such model id"
        raise ExportError(
            f"cannot get {source!r} from the Hugging Face Hub ({hint}). Use an alias from --list, a correct "
            f"model id with network access, or a local checkpoint directory. Detail: {exc}"
        ) from exc
    except ValueError as exc:  # unknown model_type
        raise ExportError(f"{source}: unsupported architecture: {exc}") from exc
    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise ExportError(f"{source}: model type {config.model_type!r} has no sequence-classification head")
    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ExportError(
            f"{source} is a {archs[0]}, not a sequence classifier (…ForSequenceClassification); "
            "its classification head would be random. Export a fine-tuned classification checkpoint."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # transformers raises many kinds for missing or unconvertible tokenizer files
        raise ExportError(f"{source}: cannot load its tokenizer ({type(exc).__name__}: {exc})") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{source}: no fast tokenizer (tokenizer.json) could be built; the run time needs one")
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):  # transformers 5 builds an empty one from no files
        raise ExportError(f"{source}: cannot load its tokenizer (no tokenizer files: its vocabulary is empty)")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    except OSError as exc:  # no weights file
        raise ExportError(f"{source}: cannot load its weights: {exc}") from exc
    return config, tokenizer, model


def window(model_type: str, max_positions: object, pad_token_id: object, model_max_length: object) -> int:
    """The longest input in tokens: the tokenizer's limit (ignoring transformers' 1e30 "no limit" placeholder),
    capped by the position embeddings (RoBERTa-family positions start after the padding index)."""
    limits = []
    if isinstance(model_max_length, int | float) and 0 < model_max_length < 100_000:
        limits.append(int(model_max_length))
    if isinstance(max_positions, int) and not isinstance(max_positions, bool) and max_positions > 0:
        offset = (
            (pad_token_id if isinstance(pad_token_id, int) else 0) + 1 if model_type in PADDING_OFFSET_MODELS else 0
        )
        limits.append(max_positions - offset)
    return min(limits) if limits else 512


def nli_ids(label2id: Mapping[str, int], num_labels: int) -> tuple[int | None, int | None]:
    """(entailment id, contradiction id) as the zero-shot pipeline finds them; (None, None) if not NLI."""
    for label, idx in label2id.items():
        if label.lower().startswith("entail"):
            entail = int(idx)
            contradiction = num_labels - 1 if entail == 0 else 0  # the reference's -1 means the last
            return entail, contradiction
    return None, None


def verification_inputs(path: Path | None, pairs: bool, nli: bool) -> list[str | tuple[str, str]]:
    """The texts every check runs on: singles, plus pairs for pair models. NLI models get (premise, hypothesis)
    pairs only, as zero-shot runs them (BART's head also needs the same number of </s> in every row of a batch)."""
    source = path or VERIFICATION_TEXTS
    try:
        texts = [t.strip() for t in source.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read verification texts from {source}: {exc}") from exc
    texts = [t for t in texts if t and not t.startswith("#")]
    if len(texts) < 20:
        raise ExportError(f"{source} has {len(texts)} texts; the checks need at least 20 non-empty lines")
    if nli:
        return [(t, f"This example is {NLI_TOPICS[i % len(NLI_TOPICS)]}.") for i, t in enumerate(texts)]
    items: list[str | tuple[str, str]] = list(texts)
    if pairs:
        items += [(texts[i], texts[(i + 1) % len(texts)]) for i in range(len(texts))]
    return items


def torch_logits(model: Any, tokenizer: Any, items: Sequence[str | tuple[str, str]], max_length: int) -> np.ndarray:
    import inspect

    import torch

    accepted = set(inspect.signature(model.forward).parameters)
    out = []
    with torch.no_grad():
        for item in items:  # one at a time, unpadded, as the reference pipeline runs
            a, b = item if isinstance(item, tuple) else (item, None)
            enc = tokenizer(a, b, return_tensors="pt", truncation="only_first" if b else True, max_length=max_length)
            feed = {k: v for k, v in enc.items() if k in accepted}
            out.append(model(**feed).logits[0].float().numpy())
    return np.stack(out)


class ZeroShotGrid:
    """Zero-shot as its users see it: every verification premise against every label set (softmax of the
    entailment logits across a set's labels; the winner is the argmax). `check` gates the int8 search on how
    often a candidate graph picks fp32's winner; `figures` describes the final graph."""

    def __init__(
        self,
        runtime: Any,
        fp32_path: Path,
        items: Sequence[str | tuple[str, str]],
        entail: int,
        label_sets: Sequence[Sequence[str]] = ZERO_SHOT_LABEL_SETS,
    ) -> None:
        self.runtime, self.entail = runtime, entail
        self.label_sets = [list(labels) for labels in label_sets]
        self.premises = [item[0] for item in items if isinstance(item, tuple)]
        labels = [label for labels in self.label_sets for label in labels]
        self.grid = [(p, f"This example is {label}.") for p in self.premises for label in labels]
        self.reference = self.scores(fp32_path.read_bytes())

    def scores(self, graph: bytes) -> list[np.ndarray]:
        """Per label set: (premises, labels) scores."""
        logits = self.runtime.logits(graph, self.grid)[:, self.entail].reshape(len(self.premises), -1)
        bounds = np.cumsum([0, *(len(labels) for labels in self.label_sets)])
        return [postprocess.softmax(logits[:, a:b]) for a, b in itertools.pairwise(bounds)]

    def agreement(self, graph: bytes) -> float:
        got = self.scores(graph)
        same = [(r.argmax(axis=1) == g.argmax(axis=1)) for r, g in zip(self.reference, got)]
        return float(np.concatenate(same).mean())

    def check(self, bound: float) -> quantize.Check:
        return quantize.Check("int8_zero_shot_top1_agreement", bound, self.agreement)

    def figures(self, final_path: Path, bound: float, log: Any) -> dict[str, Any]:
        graph = final_path.read_bytes()
        agreement = self.agreement(graph)
        diff = max(float(np.abs(r - g).max()) for r, g in zip(self.reference, self.scores(graph)))
        sets = len(self.label_sets)
        log(
            f"int8 vs fp32 zero-shot ({len(self.premises)} texts x {sets} label sets): "
            f"top-1 agreement {agreement:.2%} (bound {bound:.0%}), max score diff {diff:.4f}"
        )
        return {
            "int8_zero_shot_top1_agreement": agreement,
            "int8_zero_shot_max_score_diff": diff,
            "int8_zero_shot_min_agreement": bound,
            "int8_zero_shot_texts": len(self.premises),
            "int8_zero_shot_label_sets": self.label_sets,
        }


def export_fp32(model: Any, workdir: Path) -> Path:
    """The fp32 graph: through transformers' own exporter (transformers 5), else optimum's (transformers 4.57)."""
    out = workdir / "fp32"
    if transformers_onnx.available():
        import importlib.util

        if importlib.util.find_spec("onnxscript") is None:
            raise ExportError("transformers 5 exports through onnxscript: pip install 'offline-textclf-engine[export]'")
        config = model.config
        limit = window(config.model_type, getattr(config, "max_position_embeddings", None), config.pad_token_id, None)
        try:
            transformers_onnx.export_fp32(model, out, limit)
        except Exception as exc:  # torch.export and the ONNX translation raise many kinds
            raise ExportError(f"transformers could not export this architecture to ONNX: {exc}") from exc
    else:
        from optimum.exporters.onnx import onnx_export_from_model

        try:
            onnx_export_from_model(model, out, task="text-classification", do_validation=False)
        except Exception as exc:  # optimum raises many kinds
            raise ExportError(f"optimum could not export this architecture to ONNX: {exc}") from exc
    onnx_path = out / "model.onnx"
    if not onnx_path.exists() or any(p.suffix in (".data", ".onnx_data") for p in out.iterdir()):
        raise ExportError("the export produced external-data files; models over 2 GB are not supported")
    return onnx_path


def fused_graph(
    fp32_path: Path, config: Any, logits: Any, reference: np.ndarray, bound: float, log: Any
) -> tuple[Path, int]:
    """The fp32 graph with its attention fused (engine/export/fuse.py) when that still matches torch within
    `bound`, else the graph as exported; and how many attention layers were fused."""
    return _verified(
        fp32_path, "fused", lambda m: fuse_attention(m, config), "attention", logits, reference, bound, log
    )


def pruned_graph(path: Path, logits: Any, bound: float, log: Any) -> tuple[Path, int]:
    """The final graph (fp32, or int8 after its recipe search and gates) with its last layer run on the head's
    token only (engine/export/prune.py) when its logits stay within `bound` of the unpruned graph's, else the
    graph as it was; and how many MatMuls run on that one token. Pruning last keeps the calibration and the
    gates on the whole graph: each row's remaining computation is the same, so the verified answers stand."""
    return _verified(path, "pruned", prune_to_first_token, "last layer", logits, logits(path), bound, log)


def _verified(
    path: Path, name: str, transform: Any, what: str, logits: Any, reference: np.ndarray, bound: float, log: Any
) -> tuple[Path, int]:
    """`transform(model) -> (model, count)` applied to the graph at `path` and kept when its logits stay within
    `bound` of `reference`: (the graph to use, count or 0)."""
    import onnx

    try:
        model, count = transform(onnx.load(str(path)))
    except ImportError as exc:  # onnxruntime.transformers' shape helper needs sympy (the export and adopt extras)
        log(f"{what} not {name}: {exc}")
        return path, 0
    if not count:
        return path, 0
    out = path.with_name(f"{path.stem}-{name}.onnx")
    onnx.save(model, str(out))
    try:
        diff = float(np.abs(logits(out) - reference).max())
    except EngineError as exc:  # the verification's own run time cannot load or run it
        log(f"the {name} graph does not run ({exc}): keeping the graph as it was")
        return path, 0
    if diff <= bound:
        log(f"{what} {name} ({count}; the logits within {diff:.1e} of the reference)")
        return out, count
    log(f"{name} {what} moved the logits by {diff:.2e}, over the bound: keeping the graph as it was")
    return path, 0


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from engine import __version__

    out = {"offline-textclf-engine": __version__}
    tools = ("torch", "transformers", "optimum", "optimum-onnx", "onnxscript", "onnx", "onnxruntime", "tokenizers")
    for pkg in (*tools, "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def check_label_sets(label_sets: Sequence[Sequence[str]] | None) -> list[list[str]]:
    """The zero-shot gate's label sets: the given ones (each of two or more distinct, non-blank labels), else the
    generic ZERO_SHOT_LABEL_SETS."""
    if label_sets is None:
        return [list(labels) for labels in ZERO_SHOT_LABEL_SETS]
    checked = [[label.strip() for label in labels] for labels in label_sets]
    for labels in checked:
        if len(labels) < 2 or any(not label for label in labels) or len(set(labels)) != len(labels):
            raise ExportError(
                f"--zero-shot-labels takes sets of two or more distinct, non-blank labels, got {labels!r}"
            )
    if not checked:
        raise ExportError("--zero-shot-labels needs at least one label set")
    return checked


def export(
    source: str,
    output: Path,
    precision: str = "int8",
    calibration_file: Path | None = None,
    log: Any = print,
    min_agreement: float = MIN_INT8_AGREEMENT,
    min_zero_shot_agreement: float = MIN_ZERO_SHOT_AGREEMENT,
    zero_shot_labels: Sequence[Sequence[str]] | None = None,
    keep_fp32: bool = False,
) -> dict[str, Any]:
    """Export, verify, and write the model directory; returns the manifest. Raises ExportError on failure.

    `min_agreement` is the int8 gate (top-1 agreement with fp32); lowering it trades decisions for speed, and
    the manifest records the bound used. NLI models are also gated on zero-shot top-1 agreement (the winning label
    of each premise x label set) reaching `min_zero_shot_agreement` (0 turns that gate off). `zero_shot_labels`
    replaces the gate's generic label sets with the ones the model will rank (at least two labels each), so
    the gate holds int8 to the decisions its users will see. `keep_fp32` writes the verified fp32 graph beside
    an int8 one (FP32_REFERENCE, recorded in the manifest), the reference `engine check` needs."""
    for name, bound in (("--min-agreement", min_agreement), ("--min-zero-shot-agreement", min_zero_shot_agreement)):
        if not 0.0 <= bound <= 1.0:
            raise ExportError(f"{name} must be between 0 and 1, got {bound!r}")
    label_sets = check_label_sets(zero_shot_labels)
    hub_id, alias = resolve(source)
    if alias and alias.precision:
        precision = alias.precision
    if precision not in ("int8", "fp32"):
        raise ExportError(f"--precision must be int8 or fp32, got {precision!r}")
    config, tokenizer, model = load_checkpoint(hub_id)
    if (warning := support.untested(config.model_type)) is not None:
        log(f"warning: {warning}")
    max_length = window(
        config.model_type,
        getattr(config, "max_position_embeddings", None),
        config.pad_token_id,
        tokenizer.model_max_length,
    )
    entail, contra = nli_ids(config.label2id, config.num_labels)
    if zero_shot_labels is not None and entail is None:
        raise ExportError("--zero-shot-labels is for NLI models (entailment/contradiction labels); this one is not")
    pairs = bool(alias and alias.pairs) or entail is not None
    items = verification_inputs(calibration_file, pairs, nli=entail is not None)
    labels = {str(i): config.id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (config.pad_token_id or 0)
    pooled_id = int(config.eos_token_id) if config.model_type in EOS_POOLED_MODELS else None

    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        workdir = Path(tmp)
        tokenizer.save_pretrained(workdir / "tok")
        tokenizer_json = (workdir / "tok" / "tokenizer.json").read_text(encoding="utf-8")
        fp32_path = export_fp32(model, workdir)

        runtime = quantize.Runtime(
            tokenizer_json, max_length, pad_id, config.num_labels, nli=entail is not None, pooled_id=pooled_id
        )
        reference = torch_logits(model, tokenizer, items, max_length)
        bound = FP32_ATOL * max(1.0, float(np.abs(reference).max()))

        def graph_logits(path: Path) -> np.ndarray:
            return runtime.logits(path.read_bytes(), items)

        fp32_path, fused = fused_graph(fp32_path, config, graph_logits, reference, bound, log)
        fp32_logits = runtime.logits(fp32_path.read_bytes(), items)
        fp32_diff = float(np.abs(fp32_logits - reference).max())
        log(f"fp32 ONNX vs torch on {len(items)} inputs: max |logit diff| = {fp32_diff:.2e} (bound {FP32_ATOL:.0e})")
        if not fp32_diff <= bound:
            raise ExportError(f"fp32 ONNX does not match torch: max logit difference {fp32_diff:.3e}")
        verification: dict[str, Any] = {
            "inputs": len(items),
            "fp32_vs_torch_max_logit_diff": fp32_diff,
            "fused_attention_layers": fused,
            "attention_fusion": support.fusion_note(config.model_type, fused),
        }
        recipe: dict[str, Any] = {"name": "none (fp32)"}
        final_path = fp32_path
        if precision == "int8":
            # choose on the search split, confirm on the confirm split it never saw (engine/export/gate.py)
            search_idx, confirm_idx = gate.split(items)
            search_items = [items[i] for i in search_idx]
            confirm_items = [items[i] for i in confirm_idx]
            grid_items = search_items[: gate.ZERO_SHOT_PREMISES]
            grid = ZeroShotGrid(runtime, fp32_path, grid_items, entail, label_sets) if entail is not None else None
            checks = [grid.check(min_zero_shot_agreement)] if grid is not None and min_zero_shot_agreement > 0 else []
            result, gate_figures = gate.gated_search(
                lambda bound, where: quantize.search(
                    fp32_path, fp32_logits[search_idx], search_items, runtime, config, where, bound, log, checks
                ),
                lambda path: runtime.logits(path.read_bytes(), confirm_items),
                fp32_logits[confirm_idx],
                min_agreement,
                len(search_items),
                workdir,
                log,
                "int8 kept {point:.2%} of the held-out decisions (lower bound {lower:.2%}) even with every "
                "search-split decision kept; export with --precision fp32, or --calibration-file with your texts",
            )
            final_path, recipe = result.path, result.recipe
            verification.update(result.figures)
            verification.update(gate_figures)
            verification["int8_min_agreement"] = min_agreement  # the gate's; each look's search bound: int8_gate
            if grid is not None:
                verification.update(grid.figures(final_path, min_zero_shot_agreement, log))
        final_path, verification["first_token_matmuls"] = pruned_graph(final_path, graph_logits, bound, log)

        info = ModelInfo(
            path=output,
            task="zero-shot-classification" if entail is not None else "text-classification",
            model_type=config.model_type,
            labels=tuple(labels[str(i)] for i in range(config.num_labels)),
            problem_type=getattr(config, "problem_type", None),
            max_length=max_length,
            pad_id=int(pad_id),
            precision=precision,
            entailment_id=entail,
            contradiction_id=contra,
            source=hub_id,
            pooled_token_id=pooled_id,
        )
        extra = {FP32_REFERENCE: fp32_path.read_bytes()} if keep_fp32 and precision == "int8" else {}
        manifest = write_directory(
            output,
            final_path.read_bytes(),
            tokenizer_json,
            {**info.to_dict(), "quantization": recipe, "verification": verification, "tools": tool_versions()},
            extra,
        )
    return manifest


WEIGHTS_MIN_BYTES = 64 * 1024  # initializers this large go to the weights file
PAGE = 4096  # each large tensor starts on a page of its own, as onnxruntime aligns its own external data


def split_weights(onnx_bytes: bytes) -> tuple[bytes, bytes]:
    """(graph, weights): the graph with its large initializers moved to DATA_FILE, each at a page-aligned offset.
    onnxruntime memory-maps that file: the weights it pre-packs are not also kept as read, and embedding rows no
    text uses are never paged in (`python -m benchmarks.profile_memory` shows the difference)."""
    if importlib.util.find_spec("onnx") is None:  # the bare wheel adopting a self-contained graph: kept as it is
        return onnx_bytes, b""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    data = bytearray()
    for tensor in model.graph.initializer:
        raw = tensor.raw_data
        if len(raw) < WEIGHTS_MIN_BYTES:
            continue
        data += bytes(-len(data) % PAGE)
        entries = (("location", DATA_FILE), ("offset", str(len(data))), ("length", str(len(raw))))
        data += raw
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in entries:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return model.SerializeToString(), bytes(data)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_directory(
    output: Path,
    onnx_bytes: bytes,
    tokenizer_json: str,
    manifest: dict[str, Any],
    extra_files: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """Write into a sibling temp dir, then swap it in: DIR is never left half-written. The graph's large tensors
    go to the weights file (split_weights). `extra_files` (relative path -> bytes; the fp32 reference) are
    written too, their sha256 under the manifest's `extra_files` (`files` lists only what the run time loads)."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        staging.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would keep a service account from serving it
        tok_bytes = tokenizer_json.encode("utf-8")
        graph_bytes, weights = split_weights(onnx_bytes)
        write_atomic(staging / MODEL_FILE, graph_bytes)
        write_atomic(staging / TOKENIZER_FILE, tok_bytes)
        files = {MODEL_FILE: sha256_hex(graph_bytes), TOKENIZER_FILE: sha256_hex(tok_bytes)}
        if weights:
            write_atomic(staging / DATA_FILE, weights)
            files[DATA_FILE] = sha256_hex(weights)
        extras = {}
        for rel, content in (extra_files or {}).items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(staging / rel, content)
            extras[rel] = sha256_hex(content)
        manifest = {**manifest, "files": files, **({"extra_files": extras} if extras else {})}
        write_atomic(staging / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
        if output.exists():
            old = output.with_name(f".{output.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            output.rename(old)
            staging.rename(output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(output)
        fsync_dir(output.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="engine export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", nargs="?", help="alias, Cloudflare id, Hugging Face id or local checkpoint dir")
    parser.add_argument("--output", "-o", type=Path, help="model directory to write")
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    parser.add_argument("--calibration-file", type=Path, help="verification texts, one per line")
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=MIN_INT8_AGREEMENT,
        help=f"int8 gate: top-1 agreement with fp32 on the verification texts (default {MIN_INT8_AGREEMENT}); "
        "MatMuls stay fp32 until it holds. 0 quantizes every MatMul whatever it costs",
    )
    parser.add_argument(
        "--min-zero-shot-agreement",
        type=float,
        default=MIN_ZERO_SHOT_AGREEMENT,
        help="int8 gate of NLI models: zero-shot top-1 agreement with fp32 (the winning label of each verification "
        f"premise x label set; default {MIN_ZERO_SHOT_AGREEMENT}); 0 gates on pair top-1 only",
    )
    parser.add_argument(
        "--zero-shot-labels",
        action="append",
        metavar="A,B,...",
        help="NLI models: a comma-separated label set the model will rank, checked by the zero-shot gate instead of "
        "its generic sets (repeat for several sets; hypotheses use 'This example is {}.')",
    )
    parser.add_argument(
        "--keep-fp32",
        action="store_true",
        help=f"int8: also write the verified fp32 graph ({FP32_REFERENCE}), so that `engine check DIR --texts F` "
        "can measure int8 against it on your own texts, torch-free",
    )
    parser.add_argument("--list", action="store_true", help="show the known aliases")
    args = parser.parse_args(argv)
    if args.list:
        for name, alias in ALIASES.items():
            extra = f" (precision {alias.precision})" if alias.precision else ""
            print(f"{name:40s} {alias.hub_id}{extra}")
        return 0
    if not args.source or not args.output:
        parser.error("SOURCE and --output are required (or --list)")
    try:
        manifest = export(
            args.source,
            args.output,
            args.precision,
            args.calibration_file,
            min_agreement=args.min_agreement,
            min_zero_shot_agreement=args.min_zero_shot_agreement,
            zero_shot_labels=None if args.zero_shot_labels is None else [s.split(",") for s in args.zero_shot_labels],
            keep_fp32=args.keep_fp32,
        )
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    v = manifest["verification"]
    print(f"wrote {args.output} ({manifest['precision']}, recipe: {manifest['quantization']['name']})")
    if "int8_top1_agreement" in v:
        print(
            f"int8 vs fp32: top-1 agreement {v['int8_top1_agreement']:.2%} on the search split "
            f"({v['int8_gate']['search_inputs']} inputs), {v['int8_confirm_top1_agreement']:.2%} on the held-out "
            f"confirm split ({v['int8_gate']['confirm_inputs']}; lower bound {v['int8_confirm_lower_bound']:.2%}, "
            f"{v['int8_gate']['bound']}), max score diff {v['int8_max_score_diff']:.4f}"
        )
    if "int8_zero_shot_top1_agreement" in v:
        print(
            f"int8 vs fp32 zero-shot ranking: top-1 agreement {v['int8_zero_shot_top1_agreement']:.2%}, "
            f"max score diff {v['int8_zero_shot_max_score_diff']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
