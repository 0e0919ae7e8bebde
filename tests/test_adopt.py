"""`engine adopt`: ready-made ONNX exports (optimum and transformers.js layouts, a Hub cache) become engine model
directories without torch. Parity of adopted fp32 graphs with the transformers pipelines (the tolerances of
test_text_classification.py and test_zero_shot.py), the 99% gate on a published int8 file, --requantize, and
each refusal."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import published
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import TextClassifier, ZeroShotClassifier
from engine.errors import ExportError
from engine.export import adopt as adopt_module
from engine.export import quantize
from engine.export.verify import MIN_INT8_AGREEMENT, RESCORE_MARGIN, verification_inputs

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["I like you. I love you", "This movie was a complete waste of time.", "Meh.", "the quick brown fox " * 30]
PAIRS = [
    {"text": "What is Paris?", "text_pair": "Paris is the capital and most populous city of France."},
    {"text": "Who won the match?", "text_pair": "The weather was cold."},
]
QUIET: Callable[[str], None] = lambda _msg: None  # noqa: E731


def adopt(source: Path | str, output: Path, **kwargs: Any) -> dict[str, Any]:
    return adopt_module.adopt(str(source), output, log=QUIET, **kwargs)


def copy_of(layout_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "source"
    shutil.copytree(layout_dir, out)
    return out


def manifest(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "manifest.json").read_text())


# parity with the transformers pipelines --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("distilbert", "optimum"),
        ("roberta", "optimum"),  # RoBERTa's position offset: window = max_position_embeddings - 2
        ("distilbert-multilabel", "transformers.js"),
        ("bert", "transformers.js"),  # the wheel's tokenizer.json with its fixed padding of 128
        ("bert-regression", "optimum"),
    ],
)
def test_adopted_fp32_matches_the_pipeline_and_the_export(
    published_layout: Any, checkpoint: Any, exported: Any, name: str, kind: str, tmp_path: Path
) -> None:
    from transformers import pipeline

    out = tmp_path / "model"
    m = adopt(published_layout(name, kind), out)
    graph = "model.onnx" if kind == "optimum" else "onnx/model.onnx"
    assert m["adopted"]["file"] == graph
    assert m["precision"] == "fp32"
    # the description comes from config.json with the export's own rules
    made = manifest(exported(name, "fp32"))
    for key in ("task", "model_type", "id2label", "problem_type", "max_length", "pad_token_id", "entailment_id"):
        assert m[key] == made[key], key
    reference = pipeline("text-classification", model=str(checkpoint(name)), device="cpu")
    clf = TextClassifier.load(out)
    for text in TEXTS:
        window = clf.model.info.max_length
        expected = reference(text, top_k=None, truncation=True, max_length=window)
        got = clf(text, top_k=None)
        assert [o.label for o in got] == [e["label"] for e in expected]
        np.testing.assert_allclose([o.score for o in got], [e["score"] for e in expected], rtol=1e-5, atol=1e-5)


def test_adopted_pair_model_matches_the_pipeline(published_layout: Any, checkpoint: Any, tmp_path: Path) -> None:
    """A one-logit cross-encoder (a reranker's shape), scored on text pairs."""
    from transformers import pipeline

    out = tmp_path / "model"
    m = adopt(published_layout("bert-single", "transformers.js"), out)
    singles = len(verification_inputs(None, pairs=False, nli=False))
    assert m["verification"]["inputs"] == 2 * singles  # single texts and pairs, as the export checks pair models
    reference = pipeline("text-classification", model=str(checkpoint("bert-single")), device="cpu")
    clf = TextClassifier.load(out)
    expected = [reference(p, top_k=None) for p in PAIRS]
    got = clf(PAIRS, top_k=None)
    for g, e in zip(got, expected):
        np.testing.assert_allclose([o.score for o in g], [x["score"] for x in e], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "kind"), [("bart-nli", "transformers.js"), ("deberta-nli", "optimum")])
def test_adopted_nli_model_matches_the_zero_shot_pipeline(
    published_layout: Any, checkpoint: Any, exported: Any, name: str, kind: str, tmp_path: Path
) -> None:
    from transformers import pipeline

    out = tmp_path / "model"
    m = adopt(published_layout(name, kind), out)
    made = manifest(exported(name, "fp32"))
    assert m["task"] == "zero-shot-classification"
    for key in ("entailment_id", "contradiction_id", "pooled_token_id", "max_length", "pad_token_id"):
        assert m[key] == made[key], key
    reference = pipeline("zero-shot-classification", model=str(checkpoint(name)), device="cpu")
    zs = ZeroShotClassifier.load(out)
    labels = ["refund", "legal", "faq"]
    for multi_label in (False, True):
        expected = reference(TEXTS[1], candidate_labels=labels, multi_label=multi_label)
        got = zs.pipeline(TEXTS[1], candidate_labels=labels, multi_label=multi_label)
        assert got.labels == expected["labels"]
        np.testing.assert_allclose(got.scores, expected["scores"], rtol=1e-5, atol=1e-5)


def test_external_data_inside_the_directory_is_taken_into_the_engines_layout(
    published_layout: Any, tmp_path: Path
) -> None:
    """A published graph whose weights sit in a file of its own naming is read whole, then written in the engine's
    layout: model.onnx with its large tensors in model.onnx.data, each hashed in the manifest."""
    source = copy_of(published_layout("bert", "optimum"), tmp_path)
    model = onnx.load(str(source / "model.onnx"))
    onnx.save(
        model, str(source / "model.onnx"), save_as_external_data=True, location="model.onnx_data", size_threshold=0
    )
    assert (source / "model.onnx_data").stat().st_size > (source / "model.onnx").stat().st_size
    adopt(source, tmp_path / "inlined")
    adopt(published_layout("bert", "optimum"), tmp_path / "plain")
    files = json.loads((tmp_path / "inlined" / "manifest.json").read_text())["files"]
    assert set(files) == {"model.onnx", "model.onnx.data", "tokenizer.json"}
    assert (tmp_path / "inlined" / "model.onnx.data").stat().st_size > (source / "model.onnx").stat().st_size
    a, b = TextClassifier.load(tmp_path / "inlined"), TextClassifier.load(tmp_path / "plain")
    assert a(TEXTS, top_k=None) == b(TEXTS, top_k=None)


# verification: published int8, the gate, --requantize -----------------------------------------------------------


def agreement_of(source: Path, graph: str, m: dict[str, Any]) -> float:
    """Recomputed outside adopt: the graph against its fp32 sibling on the same inputs, through the run time."""
    tok = (source / "tokenizer.json").read_text()
    runtime = quantize.Runtime(tok, m["max_length"], m["pad_token_id"], len(m["id2label"]))
    items = verification_inputs(None, pairs=len(m["id2label"]) == 1, nli=False)
    fp32 = runtime.logits((source / Path(graph).parent / "model.onnx").read_bytes(), items)
    got = runtime.logits((source / graph).read_bytes(), items)
    return quantize.compare(fp32, got, m["problem_type"])[0]


def test_published_int8_figures_are_measured_not_copied(published_layout: Any, tmp_path: Path) -> None:
    source = published_layout("bert", "transformers.js")
    m = adopt(source, tmp_path / "model", file="onnx/model_quantized.onnx", min_agreement=0.0)
    v = m["verification"]
    assert m["precision"] == "int8"
    assert v["fp32_reference"] == "onnx/model.onnx"
    assert v["int8_min_agreement"] == 0.0
    assert v["int8_top1_agreement"] == pytest.approx(agreement_of(source, "onnx/model_quantized.onnx", m))
    assert 0.0 < v["int8_max_score_diff"] < 1.0
    assert TextClassifier.load(tmp_path / "model")("Meh.")[0].label in ("NEGATIVE", "POSITIVE")
    fp32 = adopt(source, tmp_path / "fp32")  # adopting fp32 reports the published int8 beside it
    assert fp32["verification"]["published_int8"]["top1_agreement"] == v["int8_top1_agreement"]


def damaged_int8(source: Path) -> None:
    """A 'quantized' file that changes the decisions: the fp32 graph with its largest weight scrambled."""
    model = onnx.load(str(source / "onnx" / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weight = numpy_helper.to_array(init).copy()
    np.random.default_rng(0).shuffle(weight.reshape(-1))
    init.CopyFrom(numpy_helper.from_array(weight, init.name))
    onnx.save(model, str(source / "onnx" / "model_quantized.onnx"))


def test_gate_refuses_a_quantized_file_that_changes_decisions(published_layout: Any, tmp_path: Path) -> None:
    source = copy_of(published_layout("bert", "transformers.js"), tmp_path)
    damaged_int8(source)
    out = tmp_path / "model"
    with pytest.raises(ExportError, match="below the 99% gate"):
        adopt(source, out, file="onnx/model_quantized.onnx")
    assert not out.exists()
    m = adopt(source, out, file="onnx/model_quantized.onnx", min_agreement=0.5)  # the override, as in export
    assert m["verification"]["int8_top1_agreement"] < MIN_INT8_AGREEMENT
    assert m["verification"]["int8_min_agreement"] == 0.5


def test_requantize_without_the_near_tie_cascade(published_layout: Any, tmp_path: Path) -> None:
    out = tmp_path / "model"
    source = published_layout("bert", "transformers.js")
    assert adopt_module.main([str(source), "-o", str(out), "--requantize", "--rescore-near-ties", "0"]) == 0
    m = manifest(out)
    assert "rescore_margin" not in m
    assert "extra_files" not in m
    with pytest.raises(SystemExit):
        adopt_module.main([str(source), "-o", str(tmp_path / "bad"), "--requantize", "--rescore-near-ties", "2"])


@pytest.mark.parametrize("name", ["bert", "bart-nli"])
def test_requantize_reaches_the_gate_and_reports_the_published_file(
    published_layout: Any, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = published_layout(name, "transformers.js")
    out = tmp_path / "model"
    assert adopt_module.main([str(source), "-o", str(out), "--requantize"]) == 0
    m = manifest(out)
    v = m["verification"]
    assert m["precision"] == "int8"
    assert m["adopted"] == {
        "file": "onnx/model.onnx",
        "revision": None,
        "requantized": True,
    }
    assert v["int8_top1_agreement"] >= MIN_INT8_AGREEMENT
    assert v["int8_recipes_tried"]
    assert m["quantization"]["weights"].startswith("int8 storage")
    assert v["published_int8"]["file"] == "onnx/model_quantized.onnx"
    printed = capsys.readouterr().out
    assert "published onnx/model_quantized.onnx" in printed
    assert "requantized (engine recipe)" in printed
    # near-ties re-scored in fp32 by default, as `engine export` does; never for zero-shot (a decision spans pairs)
    assert m.get("rescore_margin") == (None if name == "bart-nli" else RESCORE_MARGIN)
    graph = onnx.load(str(out / "model.onnx")).graph
    assert quantize.int8_matmuls(graph) == m["quantization"]["int8_matmuls"]
    # the export's attention fusion too, for the architectures it knows (the tiny checkpoints have 2 layers)
    fused = sum(n.op_type in ("MultiHeadAttention", "QAttention") for n in graph.node)
    assert fused == v["fused_attention_layers"] == (0 if name == "bart-nli" else 2)
    if name == "bart-nli":
        assert 0.0 <= v["int8_zero_shot_top1_agreement"] <= 1.0
        assert ZeroShotClassifier.load(out)("I want my money back", candidate_labels=["refund", "faq"])
    else:
        assert TextClassifier.load(out)("I like you.")[0].label in ("NEGATIVE", "POSITIVE")


# refusals ---------------------------------------------------------------------------------------------------------


def feature_extraction_graph(path: Path) -> None:
    """A graph whose output is per-token hidden states (an encoder export without its classification head)."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    hidden = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", 1])
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["f", "axes"], ["last_hidden_state"]),
    ]
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    graph = helper.make_graph(nodes, "encoder", [ids], [hidden], [axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def external_data_outside(source: Path) -> None:
    """model.onnx whose largest weight points at ../outside.bin."""
    model = onnx.load(str(source / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    (source.parent / "outside.bin").write_bytes(init.raw_data)
    length = len(init.raw_data)
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../outside.bin"), ("offset", "0"), ("length", str(length))):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    (source / "model.onnx").write_bytes(model.SerializeToString())


@pytest.mark.parametrize(
    ("damage", "kwargs", "message"),
    [
        (lambda s: feature_extraction_graph(s / "model.onnx"), {}, "not a graph the engine can serve"),
        (lambda s: (s / "tokenizer.json").unlink(), {}, "has no tokenizer.json"),
        (lambda s: (s / "config.json").unlink(), {}, "has no config.json"),
        (external_data_outside, {}, "outside the export's directory"),
        (lambda s: None, {"file": "model_quantized.onnx", "requantize": True}, "--requantize starts from the fp32"),
        (lambda s: None, {"file": "onnx/model.onnx"}, "no such file in the source"),
        (lambda s: None, {"file": "../config.json"}, "no such file in the source"),
        (lambda s: (s / "model.onnx").unlink(), {}, "no fp32 model.onnx beside it"),
        (lambda s: (s / "model.onnx").rename(s / "model_int8.onnx"), {}, "several graphs and no single fp32"),
        (lambda s: [p.unlink() for p in s.glob("*.onnx")], {}, "no ONNX graph found"),
    ],
)
def test_refusals_are_clear_and_write_nothing(
    published_layout: Any, tmp_path: Path, damage: Any, kwargs: dict[str, Any], message: str
) -> None:
    source = copy_of(published_layout("bert", "optimum"), tmp_path)
    damage(source)
    out = tmp_path / "model"
    with pytest.raises(ExportError, match=message):
        adopt(source, out, **kwargs)
    assert not out.exists()


def test_head_less_architecture_is_refused(published_layout: Any, tmp_path: Path) -> None:
    source = copy_of(published_layout("bert", "optimum"), tmp_path)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))
    with pytest.raises(ExportError, match="BertModel, not a sequence classifier"):
        adopt(source, tmp_path / "model")


def test_quantized_file_alone_is_adopted_only_unverified_on_request(published_layout: Any, tmp_path: Path) -> None:
    source = copy_of(published_layout("bert", "optimum"), tmp_path)
    (source / "model.onnx").unlink()
    m = adopt(source, tmp_path / "model", min_agreement=0.0)  # the only graph: chosen without --file
    assert m["adopted"]["file"] == "model_quantized.onnx"
    assert m["verification"]["unverified"]


def test_command_line_refusal_exits_1_without_traceback(published_layout: Any, tmp_path: Path) -> None:
    source = copy_of(published_layout("bert", "transformers.js"), tmp_path)
    (source / "tokenizer.json").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "adopt", str(source), "-o", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert "adopt failed" in done.stderr
    assert "Traceback" not in done.stderr


# a Hub id, through a local huggingface_hub cache -----------------------------------------------------------------


def run_offline(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )


def test_hub_id_from_the_local_cache(published_layout: Any, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    snapshot = published.hub_cache(published_layout("bert", "transformers.js"), cache, "tiny-org/tiny-bert-onnx")
    out = tmp_path / "model"
    done = run_offline(
        cache,
        "adopt",
        "tiny-org/tiny-bert-onnx",
        "-o",
        str(out),
        "--file",
        "onnx/model_quantized.onnx",
        "--min-agreement",
        "0",
    )
    assert done.returncode == 0, done.stderr
    m = manifest(out)
    assert m["source"] == "tiny-org/tiny-bert-onnx"
    assert m["source_revision"] == snapshot.name
    assert m["adopted"]["revision"] == snapshot.name
    assert m["precision"] == "int8"
    assert m["verification"]["fp32_reference"] == "onnx/model.onnx"
    classified = run_offline(cache, "classify", str(out), "I like you.")
    assert classified.returncode == 0
    assert json.loads(classified.stdout)["result"]
    from engine.model.ids import automatic_ids

    assert "tiny-org/tiny-bert-onnx" in automatic_ids(TextClassifier.load(out).model.info)

    missing = run_offline(cache, "adopt", "tiny-org/not-cached", "-o", str(tmp_path / "other"))
    assert missing.returncode == 1
    assert "cannot get 'tiny-org/not-cached'" in missing.stderr


def test_hub_id_from_the_local_cache_when_the_hub_cannot_be_reached(published_layout: Any, tmp_path: Path) -> None:
    """Not offline, but no network: the hub client's connection errors (httpx's in huggingface_hub 1.x and 2.x,
    which are not OSError as 0.x's were) fall back to the cache like HF_HUB_OFFLINE=1 does. The Hub here is a
    loopback port nothing listens on."""
    cache = tmp_path / "hub"
    snapshot = published.hub_cache(published_layout("bert", "optimum"), cache, "tiny-org/tiny-bert-onnx")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env |= {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_ETAG_TIMEOUT": "5"}
    out = tmp_path / "model"
    args = ["adopt", "tiny-org/tiny-bert-onnx", "-o", str(out), "--min-agreement", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert manifest(out)["adopted"]["revision"] == snapshot.name
    assert TextClassifier.load(out)("I like you.")
