"""The int8 gate on what zero-shot users see (issue 16, part 3): NLI exports keep fp32's winning label on the
verification premises x label sets, recomputed here through the engine's zero-shot API; and the search keeps
groups fp32 until every check the export code gives it holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import checkpoints
import numpy as np
import onnx
import pytest

from engine import ZeroShotClassificationParameters, ZeroShotClassifier
from engine.export import quantize, verify

NLI = ["bart-nli", "deberta-nli", "bert-nli"]


@pytest.mark.parametrize("name", NLI)
def test_nli_int8_keeps_the_winning_label(exported: Callable[..., Path], name: str) -> None:
    int8 = ZeroShotClassifier.load(exported(name, "int8"), threads=1)
    fp32 = ZeroShotClassifier.load(exported(name, "fp32"), threads=1)
    # the premises the export's zero-shot gate measured: its search split's first ZERO_SHOT_PREMISES (NLI pairs)
    from engine.export import gate

    items = verify.verification_inputs(None, pairs=False, nli=True)
    search, _ = gate.split(items)
    premises = [str(items[i][0]) for i in search][: gate.ZERO_SHOT_PREMISES]
    same = []
    for labels in verify.ZERO_SHOT_LABEL_SETS:
        params = ZeroShotClassificationParameters.parse(list(labels))
        for a, b in zip(int8.predict(premises, params), fp32.predict(premises, params)):
            same.append(a.outputs[0].label == b.outputs[0].label)
    agreement = float(np.mean(same))
    v = json.loads((exported(name, "int8") / "manifest.json").read_text())["verification"]
    assert agreement >= verify.MIN_ZERO_SHOT_AGREEMENT
    assert agreement == pytest.approx(v["int8_zero_shot_top1_agreement"], abs=1 / len(same))
    assert v["int8_top1_agreement"] >= v["int8_min_agreement"]  # the pair gate holds as well


def search_with(exported: Callable[..., Path], tmp_path: Path, checks: list[quantize.Check]) -> Any:
    model_dir = exported("bert", "fp32")
    m = json.loads((model_dir / "manifest.json").read_text())
    tok = (model_dir / "tokenizer.json").read_text()
    runtime = quantize.Runtime(tok, m["max_length"], m["pad_token_id"], len(m["id2label"]))
    items: list[quantize.Item] = list(checkpoints.sample_texts()[:240])
    fp32 = model_dir / "model.onnx"
    reference = runtime.logits(onnx.load(str(fp32)).SerializeToString(), items)  # with model.onnx.data
    config = type("Config", (), {"problem_type": None})()
    tmp_path.mkdir()
    return quantize.search(fp32, reference, items, runtime, config, tmp_path, 0.99, lambda _m: None, checks)


def test_search_keeps_groups_fp32_until_every_check_holds(exported: Callable[..., Path], tmp_path: Path) -> None:
    plain = search_with(exported, tmp_path / "plain", [])
    assert plain.recipe["int8_matmuls"] > 0  # test data check: without the check, some MatMuls are int8
    seen: list[int] = []

    plain_int8 = plain.recipe["int8_matmuls"]

    def fussy(graph: bytes) -> float:  # passes only once at least one more MatMul is fp32 than without the check
        int8 = quantize.int8_matmuls(onnx.load_from_string(graph).graph)
        seen.append(int8)
        return 1.0 if int8 < plain_int8 else 0.0

    gated = search_with(exported, tmp_path / "gated", [quantize.Check("fussy", 1.0, fussy)])
    assert gated.recipe["int8_matmuls"] < plain.recipe["int8_matmuls"]
    assert gated.figures["fussy"] == 1.0
    assert all("fussy" in t for t in gated.figures["int8_recipes_tried"])
    assert len(seen) == len(gated.figures["int8_recipes_tried"])
    never = search_with(exported, tmp_path / "never", [quantize.Check("never", 1.0, lambda _g: 0.0)])
    assert never.recipe["int8_matmuls"] == 0
    assert never.recipe["name"].startswith("fp32")
