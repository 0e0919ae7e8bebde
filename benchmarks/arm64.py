"""ARM64 decisions, checked under emulation: the same exports on an emulated arm64 CPU and on this x86 machine.

    python -m benchmarks.arm64 [--cpus cortex-a72,cortex-a76,max] [--texts 200] [--root /opt/arm64root]

What it does:
1. Sets up, or reuses, an arm64 Debian root (`debootstrap --arch=arm64 --foreign`, second stage under QEMU
   through binfmt_misc) holding the aarch64 wheels of onnxruntime, tokenizers and numpy at this machine's versions
   (installed from PyPI by the host's pip with `--platform manylinux_2_28_aarch64 --only-binary=:all:`). Where
   binfmt_misc cannot be registered, the root's packages are only unpacked and its Python runs under an explicit
   `qemu-aarch64-static -L ROOT`. Needs root and Debian's `qemu-user-static` and `debootstrap` (installed if
   missing).
2. Builds on x86, with the project's own `engine export`, the int8 and fp32 exports of the tests' tiny random
   checkpoints (bert, distilbert, roberta, bert-nli: tests/checkpoints.py) and of the benchmark's trained MiniLM-L6
   classifier (benchmarks/train.py, WordNet glosses: Debian's wordnet-base; its int8 export calibrated on held-out
   glosses as `python -m benchmarks` does), and onnxruntime's `quantize_dynamic` files of optimum's fp32 export
   of each, as published repositories make them (per-tensor, no reduce_range; QUInt8 weights as transformers.js'
   model_quantized.onnx, QInt8 as model_int8.onnx).
3. Runs every form natively and, for each emulated CPU model, under QEMU, one intra-op thread on both sides:
   the engine's exports through the public API (`TextClassifier.load`, raw logits and default scores; the NLI
   model on premise/hypothesis pairs and as a `ZeroShotClassifier`), the quantize_dynamic files through plain
   onnxruntime sessions, one input per run (their activation scale is per batch). Reports, per form and CPU,
   top-1 agreement with x86 and the largest logit and score differences.
4. Runs every node of the trained MiniLM's graphs in isolation (one single-node graph per node, fed the inputs
   that node saw on x86) on both sides, so a difference is pinned to the operator that makes it, not to the
   ones that inherit it; and a kernel probe (MatMulInteger of 255s by 127s, 63s and -127s, u8 x s8 and u8 x u8).
Writes benchmarks/results/arm64.md.

What it does NOT prove:
- Anything about speed. QEMU translates every instruction; emulated time means nothing, and none is reported.
- That a real chip computes the same bits. QEMU implements the instructions' architectural results, which a real
  core must match for integer and IEEE operations, but onnxruntime chooses its kernels from the CPU features the
  emulated CPU model advertises (`-cpu cortex-a72`: NEON only, as a Raspberry Pi 4; `cortex-a76`: + dot product,
  as a Pi 5 or Graviton2-class Neoverse N1; `max`: + I8MM, BF16, SVE2, SME), so the answers are those of the
  kernels picked for those features. Cores with other features (a Graviton3's SVE with 256-bit vectors, KleidiAI
  SME kernels on real SME hardware) may take other paths.
- Exactly the detection a device does: under QEMU user mode onnxruntime's cpuinfo library cannot read the CPU
  list (the root's /sys/devices/system/cpu lists are left empty on purpose: the host's make it parse x86's
  /proc/cpuinfo and crash), so onnxruntime takes its own fallback: the features of the auxiliary vector QEMU
  fills for the CPU model (dot product, I8MM, SVE, BF16, but not SME) and no per-core microarchitecture (no
  Cortex-A53/A55 narrow-load kernels).
- Thread effects: one intra-op thread on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "offline-textclf-engine"
DEFAULT_ROOT = Path("/opt/arm64root")
EXPORTER = "exporter.txt"  # beside a plain fp32 export: which exporter made it (optimum_fp32)
DEFAULT_WORK = CACHE / "arm64"
TRAINED = CACHE / "benchmarks" / "full-trained" / "ckpt-minilm"  # benchmarks/models.py's layout
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
RUNTIME = ("onnxruntime", "tokenizers", "numpy")
ORT_DEPENDENCIES = ("flatbuffers", "packaging", "protobuf")
IN_ROOT = "/engine-arm64"  # the work directory, as the arm64 side sees it
SITE = "/opt/engine-py"  # the aarch64 wheels, as the arm64 side sees it
TINY = ("bert", "distilbert", "roberta", "bert-nli")
FORMS = ("engine int8", "engine fp32", "quantize_dynamic QUInt8", "quantize_dynamic QInt8")
DEFAULT_CPUS = "cortex-a72,cortex-a76,max"
NLI_LABELS = ("sports", "politics", "technology", "food")
TRACE_TEXTS = 2  # inputs per node in the isolated-node runs
MATMUL_OPS = {"MatMul", "MatMulInteger", "MatMulIntegerToFloat", "QAttention", "DynamicQuantizeMatMul"}


# The arm64 environment ------------------------------------------------------------------------------------------


def _run(cmd: list[str], **kwargs: Any) -> None:
    print("  $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def ensure_tools() -> None:
    """QEMU's static user-mode emulator and debootstrap (Debian packages), installed when missing."""
    wanted = {"qemu-aarch64-static": "qemu-user-static", "debootstrap": "debootstrap"}
    missing = [pkg for tool, pkg in wanted.items() if not shutil.which(tool)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"needs root, or first: sudo apt-get install -y {' '.join(missing)}")
    _run(["apt-get", "install", "-y", *missing])


def binfmt_ready() -> bool:
    """True when the kernel runs aarch64 binaries through QEMU with the F flag (the interpreter opened when it
    was registered, so it also works inside a chroot); tries to register it once."""
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not entry.exists() and os.geteuid() == 0:
        if not Path("/proc/sys/fs/binfmt_misc/register").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], check=False)
        if shutil.which("update-binfmts"):
            subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=False, capture_output=True)
    try:
        lines = entry.read_text().splitlines()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1] for line in lines if line.startswith("flags:")), "")
    return bool(lines) and lines[0] == "enabled" and "F" in flags


def ensure_root(root: Path, binfmt: bool) -> None:
    """An arm64 Debian root with Python 3: debootstrap's first stage (downloads and unpacks, no arm64 code run),
    then its second stage inside the root under QEMU; without binfmt the downloaded packages are only unpacked,
    which is enough for Python run by `qemu-aarch64-static -L`."""
    ready = root / ".engine-arm64-root"
    if ready.exists():
        return
    if not (root / "usr" / "bin" / "python3").exists() and not (root / "debootstrap").exists():
        root.mkdir(parents=True, exist_ok=True)
        _run(
            [
                "debootstrap",
                "--arch=arm64",
                "--foreign",
                "--variant=minbase",
                "--include=python3",
                SUITE,
                str(root),
                MIRROR,
            ]
        )
    if (root / "debootstrap").exists():  # the second stage is pending (it removes /debootstrap when it succeeds)
        if binfmt:
            chroot = shutil.which("chroot") or "/usr/sbin/chroot"
            _run([chroot, str(root), "/debootstrap/debootstrap", "--second-stage"])
        else:
            for deb in sorted((root / "var" / "cache" / "apt" / "archives").glob("*.deb")):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    ready.write_text(f"{SUITE} arm64, {'second stage under binfmt' if binfmt else 'unpacked only'}\n")


def cpuinfo_stubs(root: Path) -> None:
    """Empty CPU lists in the root's /sys: onnxruntime's cpuinfo reads them first, fails cleanly and onnxruntime
    falls back to the auxiliary vector. Without them qemu -L hands it the host's /sys and x86 /proc/cpuinfo, and it
    crashes on those (a chroot without /sys fails cleanly either way)."""
    cpu_dir = root / "sys" / "devices" / "system" / "cpu"
    if os.path.ismount(root / "sys"):
        return
    cpu_dir.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present"):
        (cpu_dir / name).touch()


def root_python(root: Path) -> str:
    """The root's python3 version, e.g. '3.11' (python3 is a symlink to python3.X)."""
    return os.readlink(root / "usr" / "bin" / "python3").removeprefix("python")


def host_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in RUNTIME}


def ensure_wheels(root: Path) -> dict[str, str]:
    """The aarch64 wheels of the host's onnxruntime, tokenizers and numpy versions (and onnxruntime's own
    dependencies), installed by the host's pip into ROOT/opt/engine-py: binary wheels only, nothing is built."""
    versions = host_versions()
    site = root / SITE.lstrip("/")
    marker = site / "engine-runtime.json"
    if marker.exists() and json.loads(marker.read_text()) == versions:
        return versions
    platforms = [
        f"--platform={p}" for p in ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64")
    ]
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--target", str(site), "--only-binary=:all:"]
        + platforms
        + ["--python-version", root_python(root), "--implementation", "cp"]
        + [f"{name}=={v}" for name, v in versions.items()]
        + ["--no-deps", *ORT_DEPENDENCIES]  # not tokenizers' huggingface_hub: the engine never uses it
    )
    marker.write_text(json.dumps(versions))
    return versions


class Arm64:
    """Runs the root's Python as an arm64 process: chroot through binfmt_misc, else qemu-aarch64-static -L."""

    def __init__(self, root: Path, use_binfmt: bool = True) -> None:
        ensure_tools()
        self.binfmt = use_binfmt and binfmt_ready()
        ensure_root(root, self.binfmt)
        cpuinfo_stubs(root)
        self.versions = ensure_wheels(root)
        self.root = root
        self.how = "chroot, binfmt_misc" if self.binfmt else "qemu-aarch64-static -L, no binfmt_misc"

    def path(self, inside: str) -> str:
        """A path of the root as the arm64 process names it: from the root's / in the chroot; the host's own path
        under -L (where onnxruntime resolves an opened file through /proc/self/fd to its host path, and refuses
        external data whose host path is not under the model directory it was given)."""
        return inside if self.binfmt else str(self.root / inside.lstrip("/"))

    def mount_proc(self) -> bool:
        """Mount /proc inside the root for the chroot (onnxruntime reads external data through /proc/self/fd and
        refuses without it); not /sys, which would make onnxruntime's cpuinfo parse x86's /proc/cpuinfo and crash.
        True when this call mounted it (then unmount_proc undoes it)."""
        proc = self.root / "proc"
        if not self.binfmt or os.path.ismount(proc):
            return False
        _run(["mount", "-t", "proc", "proc", str(proc)])
        return True

    def unmount_proc(self) -> None:
        subprocess.run(["umount", str(self.root / "proc")], check=False)

    def command(self, cpu: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PYTHONPATH": f"{self.path(SITE)}:{self.path(IN_ROOT)}/src",
            "PYTHONDONTWRITEBYTECODE": "1",
            "ENGINE_VERIFY_CACHE": "off",
            "QEMU_CPU": cpu,
        }
        if self.binfmt:
            return [shutil.which("chroot") or "/usr/sbin/chroot", str(self.root), "/usr/bin/python3", *args], env
        # -L: an absolute path that exists under ROOT is read there (the loader, the libraries); Python finds its
        # standard library from its own path (ROOT/usr)
        qemu = shutil.which("qemu-aarch64-static") or "qemu-aarch64-static"
        python = str(self.root / "usr" / "bin" / f"python{root_python(self.root)}")
        return [qemu, "-L", str(self.root), "-cpu", cpu, python, *args], env

    def qemu_version(self) -> str:
        out = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else "?"


# What runs on both sides (numpy, onnxruntime, tokenizers and the engine only) -----------------------------------


def hwcaps() -> dict[str, bool]:
    """The aarch64 features the (emulated) kernel advertises, from this process's auxiliary vector."""
    import struct

    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return {}
    auxv = dict(struct.iter_unpack("<QQ", raw))
    hwcap, hwcap2 = auxv.get(16, 0), auxv.get(26, 0)
    bits = {"asimd": (hwcap, 1), "asimddp": (hwcap, 20), "sve": (hwcap, 22), "sve2": (hwcap2, 1)}
    bits |= {"i8mm": (hwcap2, 13), "bf16": (hwcap2, 14), "sme": (hwcap2, 23)}
    return {name: bool(word >> bit & 1) for name, (word, bit) in bits.items()}


def engine_outputs(directory: Path, items: list[Any], zero_shot: dict[str, Any] | None) -> dict[str, Any]:
    """Raw logits (label order of the model) and default scores through the public API, one thread; an NLI
    model's zero-shot winners too."""
    import numpy as np

    from engine import TextClassifier, ZeroShotClassifier

    clf = TextClassifier.load(directory, threads=1)
    inputs = [{"text": i[0], "text_pair": i[1]} if isinstance(i, list) else i for i in items]
    order = {label: k for k, label in enumerate(clf.labels)}

    def matrix(results: Any) -> Any:
        out = np.zeros((len(results), len(order)), np.float64)
        for row, outputs in enumerate(results):
            for o in outputs:
                out[row, order[o.label]] = o.score
        return out

    found = {
        "logits": matrix(clf(inputs, top_k=None, function_to_apply="none")),
        "scores": matrix(clf(inputs, top_k=None)),
    }
    if zero_shot:
        zs = ZeroShotClassifier.load(directory, threads=1)
        labels = zero_shot["labels"]
        ranked = zs(zero_shot["premises"], candidate_labels=labels)
        found["zero_shot"] = np.array([labels.index(r[0].label) for r in ranked])
    return found


def ort_outputs(path: Path, tokenizer_file: Path, window: int, items: list[Any]) -> dict[str, Any]:
    """A plain onnxruntime session, one thread, one input per run; softmax scores."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.enable_truncation(window)
    rows = []
    for item in items:
        enc = tok.encode(*item) if isinstance(item, list) else tok.encode(item)
        feed = {
            "input_ids": np.array([enc.ids], np.int64),
            "attention_mask": np.array([enc.attention_mask], np.int64),
            "token_type_ids": np.array([enc.type_ids], np.int64),
        }
        rows.append(session.run(None, {k: v for k, v in feed.items() if k in names})[0][0].astype(np.float64))
    logits = np.stack(rows)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"logits": logits, "scores": e / e.sum(axis=1, keepdims=True)}


def run_nodes(directory: Path) -> dict[str, Any]:
    """Each single-node graph of `directory` (NNNN.onnx with NNNN.npz inputs per input set) run alone, one
    thread: outputs keyed 'NNNN/k/output index'."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    out: dict[str, Any] = {}
    for graph in sorted(directory.glob("*.onnx")):
        session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        with np.load(graph.with_suffix(".npz")) as feeds:
            sets = sorted({key.split("/", 1)[0] for key in feeds.files}, key=int)
            for k in sets:
                feed = {key.split("/", 1)[1]: feeds[key] for key in feeds.files if key.split("/", 1)[0] == k}
                for j, value in enumerate(session.run(None, feed)):
                    out[f"{graph.stem}/{k}/{j}"] = value
    return out


def worker(job_file: Path, output: Path) -> None:
    """Everything this CPU (native or emulated) computes for the job, into OUTPUT.npz and OUTPUT.json."""
    import numpy as np
    import onnxruntime
    import tokenizers

    base = job_file.parent
    job = json.loads(job_file.read_text())
    arrays: dict[str, Any] = {}
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": {"onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__},
        "hwcaps": hwcaps() if platform.machine() == "aarch64" else {},
        "errors": {},
    }
    info["versions"]["numpy"] = np.__version__
    for form in job["forms"]:
        key = f"{form['model']}|{form['form']}"
        inputs = json.loads((base / form["inputs"]).read_text())
        print(f"  {key}", flush=True)
        try:
            if form["kind"] == "engine":
                got = engine_outputs(base / form["path"], inputs["items"], inputs.get("zero_shot"))
            else:
                path = base / form["path"]
                got = ort_outputs(path, path.parent / "tokenizer.json", inputs["window"], inputs["items"])
        except Exception as e:  # the report says which form could not run here, and why
            info["errors"][key] = f"{type(e).__name__}: {e}"
            continue
        for name, value in got.items():
            arrays[f"{key}|{name}"] = value
    for trace in job.get("traces", []):
        print(f"  nodes of {trace}", flush=True)
        try:
            for name, value in run_nodes(base / "traces" / trace).items():
                arrays[f"trace|{trace}|{name}"] = value
        except Exception as e:
            info["errors"][f"trace {trace}"] = f"{type(e).__name__}: {e}"
    np.savez(output.with_suffix(".npz"), **arrays)
    output.with_suffix(".json").write_text(json.dumps(info))


# Building the models (x86, the export extra) ----------------------------------------------------------------------


def engine_command(*args: str) -> list[str]:
    """`engine ARGS` through the console-script entry point: the CLI wherever its module lives."""
    code = (
        "import sys; from importlib.metadata import entry_points; (c,) = entry_points(group='console_scripts', "
        "name='engine'); sys.argv[0] = 'engine'; sys.exit(c.load()())"
    )
    return [sys.executable, "-c", code, *args]


def export(checkpoint: Path, out: Path, precision: str, calibration: Path | None = None) -> Path:
    if (out / "manifest.json").exists():
        return out
    args = ["export", str(checkpoint), "--output", str(out), "--precision", precision]
    if calibration is not None:
        args += ["--calibration-file", str(calibration)]
    print(f"  engine export {checkpoint.name} ({precision})", flush=True)
    subprocess.run(engine_command(*args), check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return out


def optimum_fp32(checkpoint: Path, out: Path) -> Path:
    """A plain fp32 ONNX export (no attention fusion), the graph published repositories quantize: optimum's where
    it is installed (the export-transformers4 extra), else transformers 5's own exporter through the engine's
    `export_fp32` (the `export` extra; optimum has no release for transformers 5). Which one is in EXPORTER."""
    if (out / "model.onnx").exists():
        return out
    staging = out.with_name(out.name + "-staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        from optimum.onnxruntime import ORTModelForSequenceClassification
    except ImportError:
        import tempfile

        from transformers import AutoModelForSequenceClassification

        from engine.export.checkpoint import export_fp32

        print(f"  transformers export {checkpoint.name}", flush=True)
        staging.mkdir(parents=True)
        model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
        with tempfile.TemporaryDirectory(prefix="arm64-onnx-") as tmp:
            shutil.copy(export_fp32(model, Path(tmp)), staging / "model.onnx")
        exporter = "transformers' own ONNX exporter (optimum is not installed)"
    else:
        print(f"  optimum export {checkpoint.name}", flush=True)
        ORTModelForSequenceClassification.from_pretrained(checkpoint, export=True).save_pretrained(staging)
        exporter = "optimum's ONNX export"
    shutil.copyfile(checkpoint / "tokenizer.json", staging / "tokenizer.json")
    (staging / EXPORTER).write_text(exporter, encoding="utf-8")
    staging.rename(out)
    return out


def quantize_dynamic(fp32: Path, out: Path, signed: bool) -> Path:
    """onnxruntime's quantize_dynamic of the plain fp32 export, as published repositories run it."""
    graph = out / "model.onnx"
    if graph.exists():
        return graph
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.mkdir(parents=True, exist_ok=True)
    weight_type = QuantType.QInt8 if signed else QuantType.QUInt8
    tmp = out / "model.tmp.onnx"
    quantize_dynamic(str(fp32 / "model.onnx"), str(tmp), weight_type=weight_type, per_channel=False, reduce_range=False)
    shutil.copyfile(fp32 / "tokenizer.json", out / "tokenizer.json")
    tmp.rename(graph)
    return graph


def trained_minilm(texts: int) -> tuple[Path, list[str], list[str]]:
    """The benchmark's MiniLM classifier (trained if missing), `texts` held-out glosses and its calibration."""
    from . import labelled, train

    split = labelled.classifier_split(False)
    if not (TRAINED / "training.json").exists():
        print("  training the MiniLM classifier (benchmarks/train.py, minutes)", flush=True)
        train.train_classifier(TRAINED, split, False)
    step = max(1, len(split.test) // texts)
    held_out = [t for t, _ in split.test[::step]][:texts]
    return TRAINED, held_out, [t for t, _ in split.calibration]


def tiny_checkpoint(name: str, work: Path) -> Path:
    out = work / "checkpoints" / name
    if not (out / "config.json").exists():
        sys.path.insert(0, str(ROOT / "tests"))
        import checkpoints

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        checkpoints.build(name, out)
    return out


def trace_graph(graph: Path, items: list[Any], tokenizer_file: Path, window: int, out: Path) -> int:
    """One single-node graph per node of `graph`, with the inputs each node saw on this CPU (an ORT_DISABLE_ALL
    run of the graph with every intermediate value made an output), for the isolated-node runs."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper
    from tokenizers import Tokenizer

    if (out / "done").exists():
        return len(list(out.glob("*.onnx")))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    model = onnx.load(str(graph))
    inits = {i.name: i for i in model.graph.initializer}
    values = [o for n in model.graph.node for o in n.output if o]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(
        onnx.ValueInfoProto(name=v) for v in values if v not in {o.name for o in model.graph.output}
    )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.enable_truncation(window)
    captured = []
    for item in items:
        enc = tok.encode(item)
        feed = {
            "input_ids": np.array([enc.ids], np.int64),
            "attention_mask": np.array([enc.attention_mask], np.int64),
            "token_type_ids": np.array([enc.type_ids], np.int64),
        }
        feed = {k: v for k, v in feed.items() if k in {i.name for i in session.get_inputs()}}
        captured.append({**feed, **dict(zip(names, session.run(None, feed)))})
    for n, node in enumerate(model.graph.node):
        needed = [i for i in node.input if i and i not in inits]
        if not needed:  # Constant, or a node of initializers only: nothing computed from the inputs
            continue
        graph_inputs = [
            helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(captured[0][i].dtype), None)
            for i in needed
        ]
        single = helper.make_graph(
            [node],
            f"node{n}",
            graph_inputs,
            [onnx.ValueInfoProto(name=o) for o in node.output if o],
            [inits[i] for i in dict.fromkeys(node.input) if i in inits],
        )
        m = helper.make_model(single, opset_imports=model.opset_import, ir_version=model.ir_version)
        stem = f"{n:04d}"
        onnx.save(m, str(out / f"{stem}.onnx"))
        np.savez(out / f"{stem}.npz", **{f"{k}/{i}": c[i] for k, c in enumerate(captured) for i in needed})
        (out / f"{stem}.json").write_text(json.dumps({"op": node.op_type, "domain": node.domain, "name": node.name}))
    (out / "done").write_text("")
    return len(list(out.glob("*.onnx")))


def build(work: Path, texts: int, models: list[str], trace: str) -> dict[str, Any]:
    """Every model directory, input file and single-node trace under WORK/job, and the job description."""
    job_dir = work / "job"
    model_dir = job_dir / "models"
    inputs = job_dir / "inputs"
    for d in (model_dir, inputs):
        d.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "tests"))
    import checkpoints

    sample = checkpoints.sample_texts()
    sources: dict[str, tuple[Path, list[Any], Path | None, dict[str, Any] | None]] = {}
    for name in models:
        if name == "minilm":
            ckpt, held_out, calibration = trained_minilm(texts)
            calibration_file = work / "minilm-calibration.txt"
            text = "\n".join(t.replace("\n", " ") for t in calibration) + "\n"
            calibration_file.write_text(text, encoding="utf-8")
            sources[name] = (ckpt, held_out, calibration_file, None)
        elif name.endswith("-nli"):
            premises = sample[: max(1, texts // len(NLI_LABELS))]
            items: list[Any] = [[p, f"This example is {label}."] for p in premises for label in NLI_LABELS]
            zero_shot = {"premises": premises, "labels": list(NLI_LABELS)}
            sources[name] = (tiny_checkpoint(name, work), items, None, zero_shot)
        else:
            sources[name] = (tiny_checkpoint(name, work), sample[:texts], None, None)
    forms: list[dict[str, Any]] = []
    exporters: dict[str, str] = {}
    for name, (ckpt, items, calibration_path, zero_shot) in sources.items():
        fp32 = export(ckpt, model_dir / f"{name}-fp32", "fp32")
        int8 = export(ckpt, model_dir / f"{name}-int8", "int8", calibration_path)
        window = json.loads((fp32 / "manifest.json").read_text())["max_length"]
        (inputs / f"{name}.json").write_text(json.dumps({"items": items, "window": window, "zero_shot": zero_shot}))
        published = optimum_fp32(ckpt, work / "optimum" / name)
        made_by = published / EXPORTER
        exporters[name] = made_by.read_text("utf-8") if made_by.exists() else "optimum's ONNX export"
        u8 = quantize_dynamic(published, model_dir / f"{name}-qd-u8", signed=False)
        s8 = quantize_dynamic(published, model_dir / f"{name}-qd-s8", signed=True)
        paths = {"engine int8": int8, "engine fp32": fp32, "quantize_dynamic QUInt8": u8, "quantize_dynamic QInt8": s8}
        for form, path in paths.items():
            kind = "engine" if form.startswith("engine") else "ort"
            rel = str(path.relative_to(job_dir))
            forms.append({"model": name, "form": form, "kind": kind, "path": rel, "inputs": f"inputs/{name}.json"})
    traces = []
    if trace in sources:
        items = [i for i in sources[trace][1] if isinstance(i, str)][:TRACE_TEXTS]
        window = json.loads((model_dir / f"{trace}-fp32" / "manifest.json").read_text())["max_length"]
        for form, path in (
            ("engine-int8", model_dir / f"{trace}-int8" / "model.onnx"),
            ("engine-fp32", model_dir / f"{trace}-fp32" / "model.onnx"),
            ("qd-u8", model_dir / f"{trace}-qd-u8" / "model.onnx"),
            ("qd-s8", model_dir / f"{trace}-qd-s8" / "model.onnx"),
        ):
            tokenizer = path.parent / "tokenizer.json"
            count = trace_graph(path, items, tokenizer, window, job_dir / "traces" / f"{trace}-{form}")
            print(f"  traced {trace} {form}: {count} nodes", flush=True)
            traces.append(f"{trace}-{form}")
    probes(job_dir / "traces" / "probe")
    traces.append("probe")
    job = {"forms": forms, "traces": traces, "trace_model": trace, "exporters": exporters}
    (job_dir / "job.json").write_text(json.dumps(job, indent=1))
    return job


def probes(out: Path) -> None:
    """MatMulInteger of 64 activations of 255 by columns of 127s, 63s and -127s (u8 x s8), and of 255s (u8 x u8):
    the exact sums are 2072640, 1028160, -2072640 and 4161600; a kernel that adds pairs in int16 saturates."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    if (out / "done").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    k = 64
    a = np.full((8, k), 255, np.uint8)
    weights = {
        "0000": np.stack([np.full(k, 127), np.full(k, 63), np.full(k, -127)], axis=1).astype(np.int8),
        "0001": np.full((k, 1), 255, np.uint8),
    }
    for stem, w in weights.items():
        zero = np.zeros((), w.dtype)
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "w", "za", "zw"], ["y"])],
            f"probe{stem}",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, k])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, [None, w.shape[1]])],
            [
                numpy_helper.from_array(w, "w"),
                numpy_helper.from_array(np.uint8(0), "za"),
                numpy_helper.from_array(zero, "zw"),
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        (out / f"{stem}.onnx").write_bytes(model.SerializeToString())
        np.savez(out / f"{stem}.npz", **{"0/a": a})
        (out / f"{stem}.json").write_text(json.dumps({"op": "MatMulInteger", "domain": "", "name": f"probe {stem}"}))
    (out / "done").write_text("")


# Running both sides and the report --------------------------------------------------------------------------------


def run_native(job_dir: Path, out: Path) -> None:
    env = {**os.environ, "ENGINE_VERIFY_CACHE": "off", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "benchmarks.arm64", "--worker", str(job_dir / "job.json"), "--output", str(out)]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)


def stage(arm64: Arm64, job_dir: Path) -> Path:
    """The job, the engine's code and this file, copied into the root (the arm64 side sees only the root)."""
    target = arm64.root / IN_ROOT.lstrip("/")
    shutil.rmtree(target, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(job_dir, target, ignore=ignore)
    shutil.copytree(ROOT / "engine", target / "src" / "engine", ignore=ignore)
    (target / "src" / "benchmarks").mkdir(parents=True)
    for name in ("__init__.py", "arm64.py"):
        shutil.copyfile(HERE / name, target / "src" / "benchmarks" / name)
    (target / "out").mkdir()
    return target


def run_emulated(arm64: Arm64, cpus: list[str], log_dir: Path) -> dict[str, subprocess.Popen[bytes]]:
    """One emulated worker per CPU model, all at once (each is one thread)."""
    procs = {}
    for cpu in cpus:
        job, output = arm64.path(f"{IN_ROOT}/job.json"), arm64.path(f"{IN_ROOT}/out/{cpu}")
        cmd, env = arm64.command(cpu, ["-m", "benchmarks.arm64", "--worker", job, "--output", output])
        log = (log_dir / f"{cpu}.log").open("wb")
        print(f"  arm64 {cpu}: {' '.join(cmd)}", flush=True)
        procs[cpu] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/")
    return procs


def load(prefix: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import numpy as np

    with np.load(prefix.with_suffix(".npz")) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(prefix.with_suffix(".json").read_text())


def compare_forms(job: dict[str, Any], native: dict[str, Any], emulated: dict[str, Any]) -> list[dict[str, Any]]:
    import numpy as np

    rows = []
    for form in job["forms"]:
        key = f"{form['model']}|{form['form']}"
        if f"{key}|logits" not in emulated or f"{key}|logits" not in native:
            rows.append({"model": form["model"], "form": form["form"], "missing": True})
            continue
        a, b = native[f"{key}|logits"], emulated[f"{key}|logits"]
        sa, sb = native[f"{key}|scores"], emulated[f"{key}|scores"]
        row = {
            "model": form["model"],
            "form": form["form"],
            "inputs": len(a),
            "agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "logit": float(np.abs(a - b).max()),
            "score": float(np.abs(sa - sb).max()),
        }
        if f"{key}|zero_shot" in native and f"{key}|zero_shot" in emulated:
            row["zero_shot"] = float((native[f"{key}|zero_shot"] == emulated[f"{key}|zero_shot"]).mean())
        rows.append(row)
    return rows


def compare_nodes(job_dir: Path, trace: str, native: dict[str, Any], emulated: dict[str, Any]) -> dict[str, Any]:
    """Per operator type: nodes, nodes whose isolated outputs differ on arm64, the largest absolute difference
    and the largest relative to the output's magnitude; integer outputs: elements that differ."""
    import numpy as np

    per_op: dict[str, dict[str, Any]] = {}
    prefix = f"trace|{trace}|"
    for meta in sorted((job_dir / "traces" / trace).glob("*.json")):
        info = json.loads(meta.read_text())
        op = f"{info['domain']}:{info['op']}" if info["domain"] not in ("", "ai.onnx") else info["op"]
        entry = per_op.setdefault(op, {"nodes": 0, "differ": 0, "abs": 0.0, "rel": 0.0, "int_elements": 0})
        entry["nodes"] += 1
        keys = [k for k in native if k.startswith(f"{prefix}{meta.stem}/")]
        if not keys or any(k not in emulated for k in keys):
            entry["missing"] = entry.get("missing", 0) + 1
            continue
        differs = False
        for k in keys:
            x, y = native[k], emulated[k]
            if x.shape != y.shape:
                differs, entry["abs"] = True, float("inf")
                continue
            if x.dtype.kind in "iub":
                n = int((x != y).sum())
                entry["int_elements"] += n
                if n:
                    differs = True
                    entry["abs"] = max(entry["abs"], float(np.abs(x.astype(np.int64) - y.astype(np.int64)).max()))
                continue
            d = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) if x.size else 0.0
            if d > 0:
                differs = True
                entry["abs"] = max(entry["abs"], d)
                entry["rel"] = max(entry["rel"], d / max(float(np.abs(x).max()), 1e-30))
        entry["differ"] += differs
        if differs and trace == "probe":
            entry.setdefault("probe", []).append([native[k].ravel()[:4].tolist() + emulated[k].ravel()[:4].tolist()])
    return per_op


def cpu_line() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    present = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)
    return f"{name} ({present})"


def probe_values(arrays: dict[str, Any]) -> str:
    got = [arrays.get(f"trace|probe|{stem}/0/0") for stem in ("0000", "0001")]
    if any(g is None for g in got):
        return "did not run"
    return " / ".join(str(int(v)) for g in got for v in g[0])  # type: ignore[index]


def summary(compared: dict[str, list[dict[str, Any]]], traced: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Per export form over every model and emulated CPU: the lowest agreement and the largest differences; per
    traced graph: the operators whose isolated nodes differ anywhere."""
    lines = []
    for form in FORMS:
        rows = [(cpu, r) for cpu, rs in compared.items() for r in rs if r["form"] == form]
        ran = [(cpu, r) for cpu, r in rows if not r.get("missing")]
        if not rows:
            continue
        text = f"- **{form}**: "
        if ran:
            worst = min(ran, key=lambda cr: cr[1]["agreement"])
            logit = max(ran, key=lambda cr: cr[1]["logit"])
            score = max(r["score"] for _, r in ran)
            text += (
                f"top-1 agreement with x86 {worst[1]['agreement']:.1%} at worst ({worst[1]['model']}, {worst[0]}); "
                f"largest logit difference {logit[1]['logit']:.1e} ({logit[1]['model']}, {logit[0]}), "
                f"largest score difference {score:.1e}"
            )
            zero_shot = [r["zero_shot"] for _, r in ran if "zero_shot" in r]
            if zero_shot:
                text += f"; zero-shot winners {min(zero_shot):.1%} the same"
        missing = [f"{r['model']} on {cpu}" for cpu, r in rows if r.get("missing")]
        if missing:
            text += f"; **did not run**: {', '.join(missing)}"
        lines.append(text + ".")
    for trace, per_cpu in traced.items():
        ops: dict[str, tuple[float, int]] = {}
        for entries in per_cpu.values():
            for op, e in entries.items():
                if e["differ"]:
                    rel, ints = ops.get(op, (0.0, 0))
                    ops[op] = (max(rel, e["rel"]), ints + e["int_elements"])
        listed = ", ".join(
            f"{op} (rel {rel:.0e}{f', {ints} integer elements' if ints else ''})"
            for op, (rel, ints) in sorted(ops.items())
        )
        lines.append(f"- {trace}, operators that differ alone: {listed or 'none'}.")
    return lines


def report(
    job: dict[str, Any],
    job_dir: Path,
    native: tuple[dict[str, Any], dict[str, Any]],
    emulated: dict[str, tuple[dict[str, Any], dict[str, Any]]],
    arm64: Arm64,
    args: argparse.Namespace,
) -> str:
    n_arr, n_info = native
    lines = [
        "# ARM64 decisions under emulation: the same exports on emulated arm64 CPUs and on x86",
        "",
        f"Command: `python -m benchmarks.arm64 --cpus {','.join(emulated)} --texts {args.texts}`. QEMU user mode "
        f"({arm64.qemu_version()}; {arm64.how}) runs an arm64 Debian {SUITE} root's Python "
        f"{next(iter(emulated.values()))[1]['python']} with the aarch64 wheels of the same versions as x86. "
        "Emulated time means nothing and is not reported; only answers are compared. One intra-op thread on both "
        "sides. See the script's docstring for what this does not prove.",
        "",
        f"- x86: {cpu_line()}; Python {n_info['python']}, "
        + ", ".join(f"{k} {v}" for k, v in n_info["versions"].items())
        + ".",
    ]
    for cpu, (_, info) in emulated.items():
        caps = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["hwcaps"].items())
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        lines.append(f"- arm64 `-cpu {cpu}`: {info['machine']}, HWCAP {caps}; {versions}.")
    compared = {cpu: compare_forms(job, n_arr, arrays) for cpu, (arrays, _) in emulated.items()}
    traced = {
        trace: {cpu: compare_nodes(job_dir, trace, n_arr, arrays) for cpu, (arrays, _) in emulated.items()}
        for trace in job["traces"]
        if trace != "probe"
    }
    made = sorted(set(job.get("exporters", {}).values())) or ["optimum's ONNX export"]
    lines.append(f"- The fp32 graph `quantize_dynamic` quantized: {'; '.join(made)}.")
    lines += ["", "## Summary", "", *summary(compared, traced), ""]
    lines += [
        "",
        "Kernel probe, MatMulInteger of 64 x 255 by 127s / 63s / -127s (u8 x s8) and by 255s (u8 x u8); exact: "
        "2072640 / 1028160 / -2072640 / 4161600.",
        "",
        "| CPU | results |",
        "|---|---|",
        f"| x86 | {probe_values(n_arr)} |",
    ]
    for cpu, (arrays, _) in emulated.items():
        lines.append(f"| arm64 {cpu} | {probe_values(arrays)} |")
    header = " | ".join(f"{cpu}: top-1 same / max logit diff / max score diff" for cpu in emulated)
    lines += [
        "",
        "## Decisions and scores, arm64 against x86",
        "",
        "Top-1 agreement of each arm64 run with the x86 run of the same file, and the largest absolute logit and "
        "score (softmax / the model's default activation) differences. Tiny models: the tests' random checkpoints on "
        f"the first {args.texts} built-in verification texts (bert-nli: premises x 4 hypotheses); minilm: the "
        "trained classifier on held-out WordNet glosses.",
        "",
        f"| model | form | inputs | {header} |",
        "|---|---|---:|" + "---|" * len(emulated),
    ]
    first = next(iter(compared.values()))
    for i, row in enumerate(first):
        cells = []
        for cpu, rows in compared.items():
            r = rows[i]
            if r.get("missing"):
                err = emulated[cpu][1]["errors"].get(f"{r['model']}|{r['form']}", "no result")
                cells.append(f"**did not run**: {err[:160]}")
                continue
            zs = f"; zero-shot {r['zero_shot']:.1%}" if "zero_shot" in r else ""
            cells.append(f"{r['agreement']:.1%} / {r['logit']:.1e} / {r['score']:.1e}{zs}")
        inputs = next((r["inputs"] for rows in compared.values() if "inputs" in (r := rows[i])), "-")
        lines.append(f"| {row['model']} | {row['form']} | {inputs} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Which operators compute other numbers on arm64",
        "",
        f"Every node of the {job['trace_model']} model's graphs run alone, fed the inputs it saw on x86 "
        f"({TRACE_TEXTS} texts), natively and emulated: a node differs when its own outputs differ from identical "
        "inputs. `abs` is the largest absolute difference, `rel` that over the output's largest magnitude; integer "
        "outputs count differing elements.",
        "",
    ]
    for trace in job["traces"]:
        if trace == "probe":
            continue
        lines += [f"### {trace}", "", "| operator | nodes | " + " | ".join(emulated) + " |"]
        lines.append("|---|---:|" + "---|" * len(emulated))
        per_cpu = traced[trace]
        ops = next(iter(per_cpu.values()))
        for op in sorted(ops, key=lambda o: (-ops[o]["nodes"], o)):
            cells = []
            for cpu in emulated:
                e = per_cpu[cpu][op]
                if e.get("missing"):
                    cells.append(f"{e['missing']} did not run")
                elif not e["differ"]:
                    cells.append("identical")
                else:
                    ints = f", {e['int_elements']} int elements" if e["int_elements"] else ""
                    cells.append(f"{e['differ']} differ: abs {e['abs']:.1e}, rel {e['rel']:.1e}{ints}")
            lines.append(f"| {op} | {ops[op]['nodes']} | " + " | ".join(cells) + " |")
        lines.append("")
    errors = {cpu: info["errors"] for cpu, (_, info) in emulated.items() if info["errors"]}
    if n_info["errors"] or errors:
        lines += ["## Errors", ""]
        for key, err in n_info["errors"].items():
            lines.append(f"- x86 {key}: {err}")
        for cpu, errs in errors.items():
            for key, err in errs.items():
                lines.append(f"- arm64 {cpu} {key}: {err}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", default=DEFAULT_CPUS, help="QEMU CPU models (qemu-aarch64-static -cpu help)")
    parser.add_argument("--texts", type=int, default=200, help="inputs per model")
    parser.add_argument("--models", default=",".join((*TINY, "minilm")), help="tiny test models and/or minilm")
    parser.add_argument("--trace", default="minilm", help="the model whose every node is run in isolation")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the arm64 Debian root (made if missing)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="models and results (reused when present)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "arm64.md")
    parser.add_argument("--no-binfmt", action="store_true", help="run qemu-aarch64-static -L even with binfmt_misc")
    parser.add_argument("--report-only", action="store_true", help="report the last run's outputs again")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.output)
        return 0
    print("arm64 environment ...", flush=True)
    arm64 = Arm64(args.root, use_binfmt=not args.no_binfmt)
    print("models ...", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    job_dir = args.work / "job"
    cpus = args.cpus.split(",")
    target = arm64.root / IN_ROOT.lstrip("/")
    if args.report_only:  # the last run's outputs, reported again
        job = json.loads((job_dir / "job.json").read_text())
        return write_report(job, job_dir, args, arm64, cpus, target)
    job = build(args.work, args.texts, args.models.split(","), args.trace)
    stage(arm64, job_dir)
    mounted = arm64.mount_proc()
    try:
        procs = run_emulated(arm64, cpus, args.work)
        print("x86 ...", flush=True)
        started = time.monotonic()
        run_native(job_dir, args.work / "x86")
        failed = [cpu for cpu, proc in procs.items() if proc.wait() != 0]
    finally:
        if mounted:
            arm64.unmount_proc()
    if failed:
        print(f"emulated runs failed: {failed}; see {args.work}/<cpu>.log", file=sys.stderr)
        return 1
    print(f"  all runs done in {time.monotonic() - started:.0f} s (emulated; not a speed)", flush=True)
    return write_report(job, job_dir, args, arm64, cpus, target)


def write_report(
    job: dict[str, Any], job_dir: Path, args: argparse.Namespace, arm64: Arm64, cpus: list[str], target: Path
) -> int:
    native = load(args.work / "x86")
    emulated = {cpu: load(target / "out" / cpu) for cpu in cpus}
    text = report(job, job_dir, native, emulated, arm64, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
