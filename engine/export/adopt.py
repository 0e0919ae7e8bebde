"""Adopt a ready-made ONNX export as an engine model directory: no torch, no transformers.

    engine adopt SOURCE --output DIR [--file onnx/model_quantized.onnx] [--requantize] [--revision REV]

SOURCE is a local directory or a Hugging Face Hub id (the `hub` extra: huggingface_hub downloads only the files
needed, into its usual cache). Two layouts are understood, with config.json, tokenizer.json and
tokenizer_config.json at the root:
- optimum: model.onnx (fp32), model_quantized.onnx at the root;
- transformers.js: onnx/model.onnx, onnx/model_quantized.onnx and the _int8, _uint8, _fp16, _q4, ... variants.

Without --file the fp32 model.onnx is adopted (several graphs and no model.onnx: refused, listing them). The graph
is checked as a load checks it (engine.model.onnx_scan), then verified through the engine's own run time on the built-in
texts: an 8-bit graph against its fp32 sibling, with the export's 99% top-1 gate; --requantize replaces the
published int8 by the engine's own accuracy-aware recipe (engine.export.quantize, needs the `adopt` extra: onnx)
and reports the published file beside it. The labels, window and NLI ids come from config.json with the export's
own rules (engine.export.export), so an adopted directory and an exported one of the same weights agree.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

from engine.errors import ModelLoadError
from engine.export import gate, quantize, support
from engine.export.export import (
    EOS_POOLED_MODELS,
    FP32_ATOL,
    MIN_INT8_AGREEMENT,
    MIN_ZERO_SHOT_AGREEMENT,
    ExportError,
    ZeroShotGrid,
    fused_graph,
    nli_ids,
    pruned_graph,
    tool_versions,
    verification_inputs,
    window,
    write_directory,
)
from engine.model.fileio import read_regular
from engine.model.manifest import ModelInfo
from engine.model.onnx_scan import CorruptGraph, check_graph, scan_onnx

FP32_GRAPH = "model.onnx"
GRAPH_DIRS = ("", "onnx")  # optimum puts graphs at the root, transformers.js under onnx/
# file name -> precision, as optimum and transformers.js name their variants
VARIANTS = {
    "model.onnx": "fp32",
    "model_quantized.onnx": "int8",
    "model_int8.onnx": "int8",
    "model_uint8.onnx": "int8",
    "model_fp16.onnx": "fp16",
    "model_q4.onnx": "q4",
    "model_q4f16.onnx": "q4f16",
    "model_bnb4.onnx": "bnb4",
}
PUBLISHED_INT8 = ("model_quantized.onnx", "model_int8.onnx", "model_uint8.onnx")  # the first present is compared
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Source:
    """Where the files come from: a local directory, or a Hub repository at one commit, fetched on demand."""

    name: str  # the manifest's `source`: the Hub id, or the directory
    files: tuple[str, ...]  # paths relative to the root, '/'-separated
    fetch: Callable[[str], Path]
    revision: str | None = None  # the Hub commit


def local_source(directory: Path) -> Source:
    root = directory.resolve()
    found = [p for d in GRAPH_DIRS if (root / d).is_dir() for p in (root / d).iterdir() if p.is_file()]
    files = tuple(sorted(p.relative_to(root).as_posix() for p in found))

    def fetch(rel: str) -> Path:
        return root / rel

    return Source(str(root), files, fetch)


def hub_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub's calls raise when the Hub or the cache cannot answer: OSError and ValueError (its own
    errors derive from these, and so did 0.x's requests errors), and, from 1.x on, the transport errors of its HTTP
    library (httpx; httpx2 in 2.x), which derive from neither: a refused connection or a timeout without
    HF_HUB_OFFLINE=1."""
    errors: list[type[Exception]] = [OSError, ValueError]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            errors.append(importlib.import_module(name).HTTPError)
    return tuple(errors)


def hub_source(repo: str, revision: str | None) -> Source:
    """The repository's file list and a fetcher; offline (HF_HUB_OFFLINE=1) both come from the local cache."""
    try:
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    except ImportError:
        raise ExportError(
            f"{repo!r} is not a local directory; to adopt from the Hugging Face Hub install the hub extra: "
            "pip install 'offline-textclf-engine[hub]'"
        ) from None
    unreachable = hub_errors()
    try:  # config.json only: the snapshot folder's name is the commit
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=["config.json"]))
    except unreachable as exc:
        raise ExportError(
            f"cannot get {repo!r} (revision {revision or 'main'}) from the Hugging Face Hub or its local cache: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    commit = folder.name
    try:
        files = tuple(HfApi().list_repo_files(repo, revision=commit))
    except unreachable:  # offline, or no network: what the cache holds
        files = tuple(sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()))

    def fetch(rel: str) -> Path:
        try:
            return Path(hf_hub_download(repo, rel, revision=commit))
        except unreachable as exc:
            raise ExportError(f"cannot download {rel} of {repo}@{commit}: {type(exc).__name__}: {exc}") from exc

    return Source(repo, files, fetch, commit)


def open_source(source: str, revision: str | None) -> Source:
    path = Path(source)
    if path.is_dir():
        return local_source(path)
    if path.exists():
        raise ExportError(f"{source} is a file; SOURCE is an export's directory or a Hugging Face Hub id")
    if not HUB_ID.match(source):
        raise ExportError(f"{source} is neither a directory nor a Hugging Face Hub id (org/name)")
    return hub_source(source, revision)


def graphs(files: Sequence[str]) -> list[str]:
    return [f for f in files if f.endswith(".onnx") and PurePosixPath(f).parent.as_posix() in (".", "onnx")]


def choose(files: Sequence[str], wanted: str | None) -> str:
    """The graph to adopt: --file, else the one fp32 model.onnx, else the only graph; anything else is refused."""
    candidates = graphs(files)
    if wanted:
        rel = PurePosixPath(wanted.replace("\\", "/")).as_posix()
        if rel.startswith(("/", "../")) or "/../" in rel or rel not in files:
            raise ExportError(f"--file {wanted}: no such file in the source; its graphs: {candidates}")
        return rel
    if not candidates:
        raise ExportError("no ONNX graph found: expected model.onnx (optimum) or onnx/model.onnx (transformers.js)")
    fp32 = [g for g in candidates if PurePosixPath(g).name == FP32_GRAPH]
    if len(fp32) == 1:
        return fp32[0]
    if len(candidates) == 1:
        return candidates[0]
    raise ExportError(f"several graphs and no single fp32 model.onnx: choose one with --file from {candidates}")


def sibling(files: Sequence[str], graph: str, names: Sequence[str]) -> str | None:
    """The first of `names` present in the same folder as `graph`."""
    folder = PurePosixPath(graph).parent
    return next((rel for n in names if (rel := (folder / n).as_posix()) in files), None)


def read_json(source: Source, name: str, required: bool) -> dict[str, Any]:
    if name not in source.files:
        if required:
            raise ExportError(
                f"{source.name} has no {name}; an ONNX export needs config.json and tokenizer.json at its root"
            )
        return {}
    path = source.fetch(name)
    try:
        data = json.loads(read_regular(path)[0])
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {name} of {source.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise ExportError(f"{name} of {source.name} is not a JSON object")
    return data


def read_graph(source: Source, rel: str) -> bytes:
    """The graph's bytes, self-contained: external data inside the source is inlined (needs onnx), outside refused."""
    data = read_regular(source.fetch(rel))[0]
    try:
        external = scan_onnx(data).external_tensors
    except CorruptGraph:
        return data  # check_graph says it clearly
    return inline_external_data(source, rel, data) if external else data


def inline_external_data(source: Source, rel: str, data: bytes) -> bytes:
    try:
        import onnx
        from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data
    except ImportError:
        raise ExportError(
            f"{rel} keeps its weights in external data files; inlining them needs onnx: "
            "pip install 'offline-textclf-engine[adopt]'"
        ) from None
    model = onnx.ModelProto.FromString(data)
    folder = PurePosixPath(rel).parent
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        location = PurePosixPath(str(info.location).replace("\\", "/"))
        if location.is_absolute() or ".." in location.parts or not str(location).strip("./"):
            raise ExportError(
                f"{rel}: tensor {tensor.name!r} reads external data from {info.location!r}, outside the export's "
                "directory; refused (external data paths can point anywhere on disk)"
            )
        data_rel = (folder / location).as_posix()
        if data_rel not in source.files:
            raise ExportError(f"{rel}: external data file {data_rel} of tensor {tensor.name!r} is missing")
        with source.fetch(data_rel).open("rb") as f:
            f.seek(info.offset or 0)
            raw = f.read(info.length) if info.length else f.read()
        tensor.raw_data = raw
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    try:
        return bytes(model.SerializeToString())
    except ValueError as exc:  # protobuf's 2 GB limit
        raise ExportError(f"{rel} is over 2 GB with its external data inlined; the engine loads one file") from exc


@dataclass(frozen=True)
class Description:
    """What adopt reads from config.json and tokenizer_config.json, with the export's rules."""

    model_type: str
    labels: tuple[str, ...]
    problem_type: str | None
    max_length: int
    pad_id: int
    entailment_id: int | None
    contradiction_id: int | None
    pooled_id: int | None


def describe(
    config: dict[str, Any], tokenizer_config: dict[str, Any], tokenizer_json: str, graph: bytes
) -> Description:
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise ExportError("config.json has no model_type")
    archs = config.get("architectures") or []
    if archs and not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise ExportError(
            f"config.json describes a {archs[0]}, not a sequence classifier (...ForSequenceClassification)"
        )
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            by_id = {int(k): str(v) for k, v in id2label.items()}
        except ValueError:
            raise ExportError("config.json: id2label keys must be integers") from None
        labels = tuple(by_id.get(i, f"LABEL_{i}") for i in range(max(by_id) + 1))
    else:  # transformers' default names, as many labels as the graph's logits
        try:
            out = scan_onnx(graph).outputs
        except CorruptGraph:
            out = ()
        width = out[0].shape[1] if out and out[0].shape and len(out[0].shape) == 2 else None
        if not isinstance(width, int):
            raise ExportError("config.json has no id2label and the graph does not say how many labels it has")
        labels = tuple(f"LABEL_{i}" for i in range(width))
    label2id = config.get("label2id") if isinstance(config.get("label2id"), dict) else None
    entail, contra = nli_ids(label2id or {label: i for i, label in enumerate(labels)}, len(labels))
    max_length = window(
        model_type,
        config.get("max_position_embeddings"),
        config.get("pad_token_id"),
        tokenizer_config.get("model_max_length"),
    )
    pooled = config.get("eos_token_id") if model_type in EOS_POOLED_MODELS else None
    return Description(
        model_type=model_type,
        labels=labels,
        problem_type=config.get("problem_type") if isinstance(config.get("problem_type"), str) else None,
        max_length=max_length,
        pad_id=pad_id(config, tokenizer_config, tokenizer_json),
        entailment_id=entail,
        contradiction_id=contra,
        pooled_id=pooled if isinstance(pooled, int) else None,
    )


def pad_id(config: dict[str, Any], tokenizer_config: dict[str, Any], tokenizer_json: str) -> int:
    """The tokenizer's pad token (as transformers' tokenizer.pad_token_id), else config.json's, else 0."""
    from tokenizers import Tokenizer

    token = tokenizer_config.get("pad_token")
    token = token.get("content") if isinstance(token, dict) else token
    if isinstance(token, str):
        found = Tokenizer.from_str(tokenizer_json).token_to_id(token)
        if found is not None:
            return int(found)
    padding = json.loads(tokenizer_json).get("padding") or {}
    if isinstance(padding.get("pad_id"), int) and padding.get("pad_token") is not None:
        return int(padding["pad_id"])
    return config["pad_token_id"] if isinstance(config.get("pad_token_id"), int) else 0


def adopt(
    source: str,
    output: Path,
    file: str | None = None,
    requantize: bool = False,
    revision: str | None = None,
    calibration_file: Path | None = None,
    min_agreement: float = MIN_INT8_AGREEMENT,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Check, verify and write the model directory; returns the manifest. Raises ExportError on failure."""
    if not 0.0 <= min_agreement <= 1.0:
        raise ExportError(f"--min-agreement must be between 0 and 1, got {min_agreement!r}")
    src = open_source(source, revision)
    chosen = choose(src.files, file)
    precision = VARIANTS.get(PurePosixPath(chosen).name, "unknown")
    if requantize and precision != "fp32":
        raise ExportError(f"--requantize starts from the fp32 graph (model.onnx), not {chosen}")
    if requantize and importlib.util.find_spec("onnx") is None:
        raise ExportError("--requantize rewrites the graph with onnx: pip install 'offline-textclf-engine[adopt]'")
    config = read_json(src, "config.json", required=True)
    if "tokenizer.json" not in src.files:
        raise ExportError(
            f"{src.name} has no tokenizer.json (the run time reads only that format); save the tokenizer with "
            "transformers' save_pretrained next to config.json, or use `engine export` on the checkpoint"
        )
    try:
        tokenizer_json = read_regular(src.fetch("tokenizer.json"))[0].decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read tokenizer.json of {src.name}: {exc}") from exc
    graph = read_graph(src, chosen)
    desc = describe(config, read_json(src, "tokenizer_config.json", required=False), tokenizer_json, graph)
    if (warning := support.untested(desc.model_type)) is not None:
        log(f"warning: {warning}")
    try:
        check_graph(graph, len(desc.labels), Path(chosen))
    except ModelLoadError as exc:
        raise ExportError(f"{chosen} is not a graph the engine can serve: {exc}") from None

    entail = desc.entailment_id
    items = verification_inputs(
        calibration_file, pairs=entail is not None or len(desc.labels) == 1, nli=entail is not None
    )
    runtime = quantize.Runtime(
        tokenizer_json, desc.max_length, desc.pad_id, len(desc.labels), entail is not None, desc.pooled_id
    )
    with tempfile.TemporaryDirectory(prefix="adopt-") as tmp:
        check = Verification(src, chosen, desc, config, items, runtime, Path(tmp), min_agreement, log)
        final, precision, recipe, verification = check.run(graph, precision, requantize)
        info = ModelInfo(
            path=output,
            task="text-classification" if entail is None else "zero-shot-classification",
            model_type=desc.model_type,
            labels=desc.labels,
            problem_type=desc.problem_type,
            max_length=desc.max_length,
            pad_id=desc.pad_id,
            precision=precision,
            entailment_id=desc.entailment_id,
            contradiction_id=desc.contradiction_id,
            source=src.name,
            pooled_token_id=desc.pooled_id,
        )
        adopted = {"file": chosen, "revision": src.revision, "requantized": requantize}
        return write_directory(
            output,
            final,
            tokenizer_json,
            {
                **info.to_dict(),
                "source_revision": src.revision,
                "adopted": adopted,
                "quantization": recipe,
                "verification": verification,
                "tools": tool_versions(),
            },
        )


@dataclass(frozen=True)
class Verification:
    """The checks of an adopted graph against its fp32 sibling, through the engine's own run time."""

    source: Source
    chosen: str
    desc: Description
    config: dict[str, Any]
    items: Sequence[quantize.Item]
    runtime: quantize.Runtime
    workdir: Path
    min_agreement: float
    log: Callable[[str], Any]

    def run(self, graph: bytes, precision: str, requantize: bool) -> tuple[bytes, str, dict[str, Any], dict[str, Any]]:
        """(graph to write, its precision, the quantization recipe, the verification figures)."""
        files, chosen, entail = self.source.files, self.chosen, self.desc.entailment_id
        recipe: dict[str, Any] = {"name": f"as published ({chosen})"}
        verification: dict[str, Any] = {"inputs": len(self.items)}
        fp32_rel = chosen if precision == "fp32" else sibling(files, chosen, [FP32_GRAPH])
        if fp32_rel is None:
            if self.min_agreement > 0:
                raise ExportError(
                    f"{chosen} has no fp32 model.onnx beside it to be verified against; "
                    "adopt it unverified with --min-agreement 0"
                )
            self.log(f"{chosen}: no fp32 graph to verify against; adopted unverified (--min-agreement 0)")
            return graph, precision, recipe, {**verification, "unverified": "no fp32 graph in the source"}
        fp32_path = self.workdir / "fp32.onnx"
        fp32_path.write_bytes(graph if fp32_rel == chosen else read_graph(self.source, fp32_rel))
        reference = self.runtime.logits(fp32_path.read_bytes(), self.items)
        verification["fp32_reference"] = fp32_rel
        if precision != "fp32":  # a published 8-bit (or other) graph: the export's gate
            verification.update(gated(self.measure(reference, graph, chosen), self.min_agreement))
            if entail is not None:
                (self.workdir / "chosen.onnx").write_bytes(graph)
                verification.update(self.zero_shot(fp32_path, self.workdir / "chosen.onnx", entail))
            return graph, precision, recipe, verification
        published = sibling(files, chosen, PUBLISHED_INT8)
        if published:  # what the published int8 file would have cost, beside the fp32 or requantized graph
            verification["published_int8"] = self.measure(reference, read_graph(self.source, published), published)
        if not requantize:
            return graph, precision, recipe, verification
        # the export's attention fusion, held to the published fp32 graph as the export holds it to torch
        bound = FP32_ATOL * max(1.0, float(abs(reference).max()))
        config = SimpleNamespace(**self.config)

        def graph_logits(path: Path) -> Any:
            return self.runtime.logits(path.read_bytes(), self.items)

        fp32_path, fused = fused_graph(fp32_path, config, graph_logits, reference, bound, self.log)
        verification["fused_attention_layers"] = fused
        # quantize.search reads only `problem_type` of its config argument: the description has it
        # NLI models: the export's zero-shot ranking gate too (the winning label over candidate sets)
        # the export's held-out gate: choose on the search split, confirm on the other (engine/export/gate.py)
        search_idx, confirm_idx = gate.split(self.items)
        search_items = [self.items[i] for i in search_idx]
        confirm_items = [self.items[i] for i in confirm_idx]
        grid_items = search_items[: gate.ZERO_SHOT_PREMISES]
        grid = ZeroShotGrid(self.runtime, fp32_path, grid_items, entail) if entail is not None else None
        checks = [grid.check(MIN_ZERO_SHOT_AGREEMENT)] if grid is not None else []
        result, gate_figures = gate.gated_search(
            lambda bound, where: quantize.search(
                fp32_path, reference[search_idx], search_items, self.runtime, self.desc, where, bound, self.log, checks
            ),
            lambda path: self.runtime.logits(path.read_bytes(), confirm_items),
            reference[confirm_idx],
            self.min_agreement,
            len(search_items),
            self.workdir,
            self.log,
            "int8 kept {point:.2%} of the held-out decisions (lower bound {lower:.2%}) even with every "
            "search-split decision kept; adopt model.onnx without --requantize",
        )
        verification.update(result.figures)
        verification.update(gate_figures)
        verification["int8_min_agreement"] = self.min_agreement
        if grid is not None:
            verification.update(grid.figures(result.path, MIN_ZERO_SHOT_AGREEMENT, self.log))
        final, verification["first_token_matmuls"] = pruned_graph(result.path, graph_logits, bound, self.log)
        return final.read_bytes(), "int8", result.recipe, verification

    def measure(self, reference: Any, graph: bytes, name: str) -> dict[str, Any]:
        """Top-1 agreement and max score change of a graph against the fp32 logits."""
        try:
            check_graph(graph, len(self.desc.labels), Path(name))
        except ModelLoadError as exc:
            raise ExportError(f"{name} is not a graph the engine can serve: {exc}") from None
        logits = self.runtime.logits(graph, self.items)
        agreement, diff = quantize.compare(reference, logits, self.desc.problem_type)
        self.log(
            f"{name} vs fp32 on {len(self.items)} inputs: top-1 agreement {agreement:.2%}, max score diff {diff:.4f}"
        )
        return {"file": name, "top1_agreement": agreement, "max_score_diff": diff}

    def zero_shot(self, fp32_path: Path, int8_path: Path, entail: int) -> dict[str, Any]:
        """The zero-shot ranking figures of a published quantized NLI graph (reported beside the pair gate)."""
        grid = ZeroShotGrid(self.runtime, fp32_path, self.items, entail)
        return grid.figures(int8_path, MIN_ZERO_SHOT_AGREEMENT, self.log)


def gated(figures: dict[str, Any], min_agreement: float) -> dict[str, Any]:
    """The export's gate on an adopted quantized graph: refuse it below `min_agreement`."""
    if figures["top1_agreement"] < min_agreement:
        raise ExportError(
            f"{figures['file']} agrees with fp32 on {figures['top1_agreement']:.2%} of decisions, below the "
            f"{min_agreement:.0%} gate; adopt model.onnx, or make a better int8 with --requantize "
            "(or accept it with a lower --min-agreement)"
        )
    return {
        "int8_top1_agreement": figures["top1_agreement"],
        "int8_max_score_diff": figures["max_score_diff"],
        "int8_min_agreement": min_agreement,
    }


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="engine adopt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="an optimum or transformers.js export: a directory or a Hugging Face Hub id")
    parser.add_argument("--output", "-o", type=Path, required=True, help="model directory to write")
    parser.add_argument("--file", help="the graph to adopt, e.g. onnx/model_quantized.onnx (default: model.onnx)")
    parser.add_argument(
        "--requantize", action="store_true", help="replace the graph by the engine's own int8 of the fp32 graph"
    )
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit; default main)")
    parser.add_argument("--calibration-file", type=Path, help="verification texts, one per line")
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=MIN_INT8_AGREEMENT,
        help=f"gate on a quantized graph's top-1 agreement with fp32 (default {MIN_INT8_AGREEMENT}); 0 accepts "
        "a graph with no fp32 sibling unverified",
    )
    args = parser.parse_args(argv)
    try:
        manifest = adopt(
            args.source,
            args.output,
            args.file,
            args.requantize,
            args.revision,
            args.calibration_file,
            args.min_agreement,
            log=lambda msg: print(msg, file=sys.stderr),
        )
    except ExportError as exc:
        print(f"adopt failed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({manifest['precision']}, from {manifest['adopted']['file']})")
    for line in summary(manifest["verification"]):
        print(line)
    return 0


def summary(v: dict[str, Any]) -> list[str]:
    """The verification figures, published and requantized int8 side by side when both exist."""
    rows = []
    if "published_int8" in v:
        p = v["published_int8"]
        rows.append((f"published {p['file']}", p["top1_agreement"], p["max_score_diff"]))
    if "int8_top1_agreement" in v:
        name = "requantized (engine recipe)" if "int8_recipes_tried" in v else "adopted int8"
        rows.append((name, v["int8_top1_agreement"], v["int8_max_score_diff"]))
    if not rows:
        return []
    lines = [f"{'int8 vs fp32':40s} {'top-1 agreement':>16s} {'max score diff':>15s}"]
    lines += [f"{name:40s} {agree:16.2%} {diff:15.4f}" for name, agree, diff in rows]
    return lines
