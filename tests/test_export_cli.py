"""`engine export` and `engine adopt` as a pip user gets them: subcommands of the installed `engine` command.

The wheel tests build the wheel once, then
- install it with onnxruntime, tokenizers, numpy and onnx (from the package index or pip's cache) into a fresh venv
  WITHOUT torch, adopt an optimum-layout and a transformers.js-layout directory there and classify with them;
- install it into an empty target directory run with this interpreter's packages (the export extra) and make one
  export with the installed `engine export`.
They are marked slow (venv creation and package installation: about a minute with a warm pip cache):
`pytest -m "not slow"` skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import checkpoints
import pytest

from engine import TextClassifier
from engine.cli import main
from engine.export import export as export_models

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ["onnxruntime", "tokenizers", "numpy", "onnx", "sympy"]  # the run time + the adopt extra


@pytest.fixture(scope="module")
def few_texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "texts.txt"
    path.write_text("\n".join(checkpoints.sample_texts()[:20]) + "\n", encoding="utf-8")
    return path


def test_export_help_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0
    assert "engine export SOURCE --output DIR" in capsys.readouterr().out
    assert main(["export", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(alias.hub_id in listed for alias in export_models.ALIASES.values())


def test_export_subcommand_writes_a_model(checkpoint: Any, few_texts: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    argv = [str(checkpoint("bert")), "-o", str(out), "--precision", "fp32", "--calibration-file", str(few_texts)]
    assert main(["export", *argv]) == 0
    assert TextClassifier.load(out)("I like you.")[0].label in ("NEGATIVE", "POSITIVE")


def test_usage_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    usage = capsys.readouterr().err
    assert all(name in usage for name in ("classify", "score", "serve", "export", "adopt"))


# the wheel -------------------------------------------------------------------------------------------------------


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the sources (an in-tree build would leave build/ in the clone)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT / "engine", src / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", src, "-w", tmp / "dist")
    (found,) = (tmp / "dist").glob("offline_textclf_engine-*.whl")
    return found


@pytest.mark.slow
def test_wheel_carries_the_export_package_and_its_texts(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("export/__init__.py", "export/export.py", "export/quantize/__init__.py", "export/adopt.py"):
        assert f"engine/{name}" in names
    assert "engine/export/verification_texts.txt" in names
    for name in ("manifest.json", "model.onnx", "model.onnx.data", "tokenizer.json"):  # the shipped default model
        assert f"engine/default_model/{name}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "engine = engine.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.fixture(scope="module")
def torch_free_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "v"
    run(sys.executable, "-m", "venv", venv)
    pip = venv / "bin" / "pip"
    run(pip, "install", "-q", "--disable-pip-version-check", *RUNTIME_PACKAGES)
    run(pip, "install", "-q", "--disable-pip-version-check", "--no-deps", wheel)
    return venv


@pytest.mark.slow
def test_torch_free_venv_adopts_both_layouts_and_classifies(
    torch_free_venv: Path, published_layout: Any, tmp_path: Path
) -> None:
    python, engine = torch_free_venv / "bin" / "python", torch_free_venv / "bin" / "engine"
    probe = "import importlib.util as u, engine; print(engine.__file__, [m for m in ('torch',) if u.find_spec(m)])"
    where, missing = run(python, "-c", probe, cwd=tmp_path).stdout.split(" ", 1)
    assert where.startswith(str(torch_free_venv))
    assert missing.strip() == "[]"

    # without the export extra, `engine export` says which extra to install
    done = subprocess.run(
        [engine, "export", "no-org/no-model", "-o", "x"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 1
    assert "[export]" in done.stderr
    assert "Traceback" not in done.stderr

    optimum, tjs = tmp_path / "optimum-model", tmp_path / "tjs-model"
    run(engine, "adopt", published_layout("bert", "optimum"), "-o", optimum, cwd=tmp_path)
    done = run(engine, "adopt", published_layout("bert", "transformers.js"), "-o", tjs, "--requantize", cwd=tmp_path)
    assert "published onnx/model_quantized.onnx" in done.stdout
    assert "requantized" in done.stdout
    assert json.loads((tjs / "manifest.json").read_text())["precision"] == "int8"
    for model in (optimum, tjs):
        out = run(engine, "classify", model, "I like you. I love you", cwd=tmp_path).stdout
        result = json.loads(out.splitlines()[0])["result"]
        expected = TextClassifier.load(model)("I like you. I love you", top_k=None)  # the same files, in-process
        assert [r["label"] for r in result] == [o.label for o in expected]
        assert [r["score"] for r in result] == pytest.approx([o.score for o in expected], abs=1e-6)


@pytest.mark.slow
def test_installed_wheel_exports_with_the_export_extra(
    wheel: Path, checkpoint: Any, few_texts: Path, tmp_path: Path
) -> None:
    """The wheel alone in a target directory, run by this interpreter (which has the export extra installed)."""
    target = tmp_path / "target"
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, wheel)
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    where = run(sys.executable, "-c", "import engine; print(engine.__file__)", cwd=tmp_path, env=env).stdout
    assert where.startswith(str(target))
    engine = target / "bin" / "engine"
    assert "engine export SOURCE --output DIR" in run(engine, "export", "--help", cwd=tmp_path, env=env).stdout
    out = tmp_path / "model"
    argv = [checkpoint("bert"), "-o", out, "--precision", "fp32", "--calibration-file", few_texts]
    done = run(engine, "export", *argv, cwd=tmp_path, env=env)
    assert f"wrote {out}" in done.stdout
    assert TextClassifier.load(out)("I like you.")[0].label in ("NEGATIVE", "POSITIVE")
