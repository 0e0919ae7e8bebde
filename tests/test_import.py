"""The run time stays torch-free and the postprocess core stays numpy-only."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "engine"


def test_import_engine_pulls_no_heavy_framework() -> None:
    code = (
        "import sys, engine; "
        "print(','.join(m for m in ('torch', 'transformers', 'optimum', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_postprocess_imports_only_numpy_and_engine_errors() -> None:
    tree = ast.parse((ENGINE / "runtime" / "postprocess.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            imported.add(module if module.startswith("engine.") else module.split(".")[0])
    assert imported <= {"__future__", "collections", "enum", "typing", "numpy", "engine.errors"}, imported


def test_loading_and_scoring_leave_openssl_and_thread_pools_unimported(exported: Callable[..., Path]) -> None:
    """Peak memory: hashlib (OpenSSL, 3.6 MB resident) and concurrent.futures (0.8 MB) load only when they are
    needed (a large file to hash, batches at once); a model whose files are small and one batch at a time needs
    neither. Concurrent batches do import the thread pool."""
    model = exported("bert", "int8")
    baseline = "import sys, numpy, onnxruntime, tokenizers; print('hashlib' in sys.modules)"
    if subprocess.run([sys.executable, "-c", baseline], capture_output=True, text=True).stdout.strip() == "True":
        pytest.skip("this numpy or onnxruntime imports hashlib itself (numpy < 1.25 does)")
    code = (
        "import sys, engine; c = engine.TextClassifier.load(sys.argv[1]); c(['fine', 'bad']); "
        "print(','.join(m for m in ('hashlib', '_hashlib', 'concurrent.futures') if m in sys.modules)); "
        "engine.TextClassifier.load(sys.argv[1], concurrent_batches=2); "
        "print('concurrent.futures' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"]  # nothing listed, then the pool's import


def test_the_ray_import_paths_import_no_ray_and_name_one_job() -> None:
    """engine.ray (public) re-exports engine.jobs.ray without importing Ray or pyarrow, and without hiding the
    `ray` package."""
    code = (
        "import sys, engine.ray, engine.jobs.ray as pkg; "
        "print(sorted(m for m in ('ray', 'pyarrow') if m in sys.modules)); "
        "print(all(getattr(engine.ray, n) is getattr(pkg, n) for n in engine.ray.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True"]
