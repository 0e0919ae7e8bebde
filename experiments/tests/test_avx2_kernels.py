"""Tests of experiments.avx2_kernels (run by hand: `pytest experiments/tests`; CI runs tests/ only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def test_kernel_probe_is_exact_in_the_engines_weight_range() -> None:
    """The probe of experiments.avx2_kernels on this CPU: 7-bit weights give the exact sums whatever the kernel;
    full-range weights give either the exact sums (VNNI) or int16-saturated pair sums (AVX2's vpmaddubsw)."""
    from experiments import avx2_kernels

    p = avx2_kernels.probe()
    assert p["exact"] == [64 * 255 * 127, 64 * 255 * 63, -64 * 255 * 127]
    assert p["got"][1] == p["exact"][1]
    saturated = [32 * 32767, 64 * 255 * 63, -32 * 32768]  # 32 pair sums, each clipped to int16
    assert p["got"] in (p["exact"], saturated)


def test_avx2_report_compares_emulated_with_native(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments import avx2_kernels

    monkeypatch.setattr(avx2_kernels, "MODELS", ("minilm",))
    monkeypatch.setattr(avx2_kernels, "native_cpu", lambda: "test CPU")
    cache = tmp_path / "cache"
    for name in ("engine-int8-minilm", "engine-fp32-minilm", "onnx-minilm-avx512_vnni"):
        (cache / name).mkdir(parents=True)
    (cache / "onnx-minilm-avx512_vnni" / "model_quantized.onnx").write_bytes(b"")
    fp32 = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    peer = "onnxruntime dynamic int8 (avx512_vnni preset)"
    arrays = {
        "native": {"engine fp32": fp32, "engine int8": fp32 + 0.01, peer: fp32},
        "emulated": {"engine int8": fp32 + 0.01, peer: fp32 * np.array([[1, 1], [1, 1], [-1, 1], [1, 1]])},
    }
    probes = {"native": [1, 2, 3], "emulated": [0, 2, 0]}
    for where, found in arrays.items():
        (tmp_path / where).mkdir()
        (tmp_path / where / "probe.json").write_text(json.dumps({"got": probes[where], "exact": [1, 2, 3]}))
        for name, values in found.items():
            np.save(tmp_path / where / f"minilm--{name}.npy", values)
    text = avx2_kernels.report(cache, tmp_path / "native", tmp_path / "emulated", "Haswell")
    assert "| native | 1 | 2 | 3 | exact int32 |" in text
    assert "| Haswell | 0 | 2 | 0 | int16 pair sums saturate (vpmaddubsw) |" in text
    assert "| minilm (4 inputs) | engine int8 | 0.00e+00 | 100.0% | 100.0% | 100.0% |" in text
    assert f"| minilm (4 inputs) | {peer} | 2.00e+00 | 75.0% | 100.0% | 75.0% |" in text
