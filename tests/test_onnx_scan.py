"""The graph scan is the security-critical parser: whatever bytes it is given, it answers or raises ModelLoadError."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ModelLoadError
from engine.model.onnx_scan import check_graph, scan_onnx

pytest.importorskip("onnx")
from test_hostile_models import classifier

VALID = classifier()
WHERE = Path("model.onnx")


def scan(data: bytes) -> None:
    with contextlib.suppress(ModelLoadError):  # the only exception allowed; anything else fails the test
        check_graph(data, 2, WHERE)


def test_the_valid_graph_passes() -> None:
    graph = check_graph(VALID, 2, WHERE)
    assert [v.name for v in graph.inputs] == ["input_ids", "attention_mask"]
    assert [v.name for v in graph.outputs] == ["logits"]
    assert not graph.external_tensors


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_raise_only_model_load_error(data: bytes) -> None:
    scan(data)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_graphs_raise_only_model_load_error(data: st.DataObject) -> None:
    """Random byte edits, cuts and insertions in a valid graph reach the nested-message paths of the reader."""
    buf = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        edit = data.draw(st.sampled_from(["set", "cut", "insert"]))
        if edit == "set":
            buf[pos] = data.draw(st.integers(0, 255))
        elif edit == "cut":
            del buf[pos : pos + data.draw(st.integers(1, 64))]
        else:
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        if not buf:
            break
    scan(bytes(buf))


def test_deep_varint_and_truncated_lengths_are_corrupt() -> None:
    for data in (b"\xff" * 20, b"\x3a\xff\xff\xff\x0f", b"\x3a\x05ab"):
        with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
            check_graph(data, 2, WHERE)
    assert scan_onnx(VALID).inputs  # the unguarded scan reads the valid graph too
