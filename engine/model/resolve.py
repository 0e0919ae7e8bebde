"""Models by name: a directory, an export alias or a Hugging Face id -> a verified model directory.

A name is made once into the model cache (`$ENGINE_HOME/models`, default `~/.cache/offline-textclf-engine`, as
HF_HOME is for the Hub), then reused:
1. by `engine adopt` when the Hub repository (or the local Hugging Face cache) holds a usable ONNX export: no
   torch; re-quantized to the engine's int8 recipe when the adopt extra (onnx) is installed;
2. else by `engine export` when the export extra (torch, transformers and its ONNX exporter) is installed;
3. else an error naming the extra to install.
Concurrent first uses make it once (a file lock); `HF_HUB_OFFLINE=1` uses only what is cached. A cached directory
whose files fail their sha256 check is made again (or refused, offline), never used. No name at all means the
model shipped with the package (engine/default_model/).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.errors import EngineError, ModelLoadError
from engine.model.aliases import ALIASES
from engine.model.manifest import MANIFEST_FILE

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "default_model"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def home() -> Path:
    """The engine's cache root: $ENGINE_HOME, else $XDG_CACHE_HOME/offline-textclf-engine, else ~/.cache/..."""
    if os.environ.get("ENGINE_HOME"):
        return Path(os.environ["ENGINE_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "offline-textclf-engine"


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def describe_path(path: Path) -> str:
    """What a path that is not a model directory is, and the one command that makes one of it."""
    if not path.exists():
        return (
            f"{path} is not a model directory: it does not exist. Give a model directory, an export alias "
            "(engine export --list) or a Hugging Face id"
        )
    if path.is_file():
        return (
            f"{path} is a file; give the model directory that holds it (one made by `engine export` or `engine adopt`)"
        )
    names = {p.name for p in path.iterdir()} | {f"onnx/{p.name}" for p in (path / "onnx").glob("*.onnx")}
    if any(n.endswith(".onnx") for n in names):
        return (
            f"{path} has no {MANIFEST_FILE}: it is an ONNX export, not an engine model directory (or one that lost "
            f"its manifest: re-export it); make one with `engine adopt {path} --output NEW`"
        )
    if "config.json" in names and names & {"model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"}:
        return (
            f"{path} is a transformers checkpoint, not an engine model directory; make one with "
            f"`engine export {path} --output NEW` (pip install 'offline-textclf-engine[export]')"
        )
    return f"{path} has no {MANIFEST_FILE}: it is not a model directory made by `engine export` or `engine adopt`"


def resolve(name: str | Path | None, log: Callable[[str], object] | None = None) -> Path:
    """The model directory for `name`: itself if it is one; the shipped default model for None; else the cached
    (or newly made) directory of an export alias or Hugging Face id."""
    say = log or (lambda msg: print(f"engine: {msg}", file=sys.stderr))
    if name is None:
        return DEFAULT_MODEL
    path = Path(name)
    # a path: a Path, anything that exists, or a string that does not look like org/name or whose folder exists here
    local_parent = path.parent != Path(".") and path.parent.is_dir()
    if isinstance(name, Path) or path.exists() or local_parent or (os.sep in str(name) and not HUB_ID.match(str(name))):
        if os.path.lexists(path / MANIFEST_FILE):  # the loader checks it is a regular file
            return path
        raise ModelLoadError(describe_path(path))
    alias = ALIASES.get(str(name))
    hub_id = alias.hub_id if alias else str(name)
    if not HUB_ID.match(hub_id):
        raise ModelLoadError(describe_path(path))
    precision = alias.precision if alias and alias.precision else "int8"
    target = home() / "models" / f"{hub_id.replace('/', '--')}--{precision}"
    with _lock(target.with_name(target.name + ".lock")):
        if _usable(target):
            return target
        if target.exists():
            if offline():
                raise ModelLoadError(
                    f"the cached {target} fails its checks and HF_HUB_OFFLINE=1 forbids making it again; unset it "
                    "once, or delete that directory"
                )
            say(f"the cached {target} fails its checks: making it again")
            shutil.rmtree(target)
        _make(str(name), hub_id, precision, target, say)
    return target


def _usable(target: Path) -> bool:
    if not (target / MANIFEST_FILE).is_file():
        return False
    from engine.model import files

    try:
        files.load(target, verify=True)
    except EngineError:
        return False
    return True


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def export_installed() -> bool:
    """torch and transformers, with an ONNX exporter: onnxscript (transformers 5 exports through it, the export
    extra) or optimum (transformers 4.57's, the export-transformers4 extra). Looked up, not imported."""
    found = importlib.util.find_spec
    return all(found(m) is not None for m in ("torch", "transformers")) and any(
        found(m) is not None for m in ("onnxscript", "optimum")
    )


def _make(name: str, hub_id: str, precision: str, target: Path, say: Callable[[str], object]) -> None:
    """adopt, else export, else say which extra is missing (module doc)."""
    where = "the local Hugging Face cache" if offline() else "the Hugging Face Hub"
    say(f"{name}: not in the model cache; making {target} from {hub_id} ({where})")
    adopt_error: EngineError | None = None
    if importlib.util.find_spec("huggingface_hub") is not None:
        from engine.export.adopt import adopt

        requantize = precision == "int8" and importlib.util.find_spec("onnx") is not None
        if precision == "int8" and not requantize:
            say("the adopt extra (onnx) is not installed: the published graph is adopted as it is, not re-quantized")
        try:
            adopt(hub_id, target, requantize=requantize, log=say)
            return
        except EngineError as exc:  # no usable ONNX export there: try the export
            adopt_error = exc
            say(f"no usable ONNX export of {hub_id}: {exc}")
    if export_installed():
        from engine.export.export import export

        try:
            export(hub_id, target, precision, log=say)
        except (EngineError, OSError) as exc:
            hint = (
                "HF_HUB_OFFLINE=1 is set and neither cache holds it: run once with network access"
                if offline()
                else "check the name and your network"
            )
            raise ModelLoadError(f"{name}: cannot make a model of {hub_id}: {hint} ({type(exc).__name__})") from exc
        return
    if adopt_error is None:
        raise ModelLoadError(
            f"{name}: to fetch models by name install the hub extra (pip install 'offline-textclf-engine[hub]'), "
            "or give a local model directory"
        )
    raise ModelLoadError(
        f"{name}: {hub_id} has no ONNX export the engine can adopt ({adopt_error}), and exporting it needs the "
        "export extra: pip install 'offline-textclf-engine[export]'"
    )
