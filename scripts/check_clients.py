"""Call a live `engine serve` with the official clients, as their users do, and validate every answer.

Each client runs in an environment of its own, installed from the package index at today's release (or the
version given), exactly as a user has it: huggingface_hub 2.x and 0.x (`InferenceClient`), @huggingface/inference
4.x (node, its README's calls), the seeds' curl / Python / fetch snippets, and raw TEI, Cohere and Jina rerank
requests. Every answer is validated against the vendored schemas in tests/schemas/. One line per client x task.

    python scripts/check_clients.py --serve CLASSIFIER_DIR ZERO_SHOT_DIR RERANKER_DIR
    python scripts/check_clients.py --url http://127.0.0.1:8000 --classifier ID --zero-shot ID --reranker ID

Clients' environments are kept in ~/.cache/offline-textclf-engine/clients (--cache-dir). tests/test_clients.py
runs the same checks against a server it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parent.parent / "tests" / "schemas"
TEXT = "I like you. I love you"
ZS_TEXT = (
    "Hi, I recently bought a device from your company but it is not working as advertised and I want my money back!"
)
LABELS = ["refund", "legal", "faq"]
QUERY = "What is Deep Learning?"
DOCUMENTS = ["Deep Learning is a kind of machine learning.", "Cheese is made from milk.", "It rained."]
# huggingface_hub refuses every URL, loopback included, with either set: the clients run without them
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

HUB_PROGRAM = """
import json, sys
import huggingface_hub
from huggingface_hub import InferenceClient

a = json.loads(sys.argv[1])
client = InferenceClient(model=a["url"] + "/models/" + a["model"], token=a["token"])
if a["task"] == "text-classification":
    out = client.text_classification(a["text"])
else:
    out = client.zero_shot_classification(a["text"], a["labels"])
answer = [{"label": o.label, "score": o.score} for o in out]
print(json.dumps({"version": huggingface_hub.__version__, "answer": answer}))
"""

# @huggingface/inference's README calls, with endpointUrl pointing at the local server
JS_PROGRAM = """
import { InferenceClient } from "@huggingface/inference";
import { readFileSync } from "node:fs";

const a = JSON.parse(process.argv[2]);
const version = JSON.parse(readFileSync("node_modules/@huggingface/inference/package.json")).version;
const hf = new InferenceClient(a.token, { endpointUrl: `${a.url}/models/${a.model}` });
let answer;
if (a.task === "text-classification") {
  answer = await hf.textClassification({ model: "distilbert-base-uncased-finetuned-sst-2-english", inputs: a.text });
} else {
  answer = await hf.zeroShotClassification({
    model: "facebook/bart-large-mnli",
    inputs: [a.text],
    parameters: { candidate_labels: a.labels },
  });
}
console.log(JSON.stringify({ version, answer }));
"""

# The seeds' fetch snippet, as Node sends it
FETCH_PROGRAM = """
const a = JSON.parse(process.argv.at(-1));
const r = await fetch(a.url, {
  headers: { Authorization: `Bearer ${a.token}`, "Content-Type": "application/json" },
  method: "POST",
  body: JSON.stringify(a.body),
});
console.log(JSON.stringify({ status: r.status, answer: await r.json() }));
"""


@dataclass(frozen=True)
class Target:
    url: str
    token: str
    classifier: str
    zero_shot: str
    reranker: str


@dataclass(frozen=True)
class Check:
    client: str
    task: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.client:<34} {self.task:<26} {self.detail}"


def _validator(name: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource

    hfjs = SCHEMAS / "huggingface.js"
    resources = [
        (json.loads(p.read_text())["$id"], Resource.from_contents(json.loads(p.read_text())))
        for p in hfjs.glob("*.json")
    ]
    registry = Registry().with_resources(resources)
    if "#" in name:
        path, pointer = name.split("#")
        schema = {"$ref": f"#/definitions/{pointer}", **json.loads((SCHEMAS / path).read_text())}
    else:
        schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft7Validator(schema, registry=registry)


def validate(name: str, answer: Any) -> None:
    """Raise with the first schema error of `answer` against tests/schemas/NAME (NAME#Definition for one part)."""
    errors = sorted(_validator(name).iter_errors(answer), key=str)
    if errors:
        raise AssertionError(f"{name}: {errors[0].message}")


def sorted_labels(answer: list[dict[str, Any]], labels: list[str]) -> None:
    if sorted(a["label"] for a in answer) != sorted(labels):
        raise AssertionError(f"labels {[a['label'] for a in answer]} are not {labels}")
    scores = [a["score"] for a in answer]
    if scores != sorted(scores, reverse=True):
        raise AssertionError(f"scores are not sorted: {scores}")


def client_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}


def hub_python(cache: Path, spec: str) -> Path:
    """A venv with exactly `spec` (e.g. huggingface_hub==0.36.2, or huggingface_hub>=2,<3) installed, kept."""
    venv = cache / ("hub-" + "".join(c if c.isalnum() or c in ".-" else "_" for c in spec))
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", spec], check=True)
    return python


def js_dir(cache: Path, spec: str) -> Path:
    """A folder with `spec` (e.g. @huggingface/inference@4) installed by npm, kept."""
    folder = cache / ("npm-" + spec.replace("/", "_").replace("@", ""))
    if not (folder / "node_modules" / "@huggingface" / "inference").exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", spec], cwd=folder, check=True)
    return folder


def run_json(cmd: list[str], cwd: Path | None = None) -> Any:
    out = subprocess.run(cmd, cwd=cwd, env=client_env(), capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError((out.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def post(url: str, body: Any, token: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}", **(headers or {})}
    request = urllib.request.Request(url, data=data, headers=all_headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _check(client: str, task: str, run: Callable[[], str]) -> Check:
    try:
        return Check(client, task, True, run())
    except Exception as exc:  # a failed check is a line, not a crash of the others
        return Check(client, task, False, f"{type(exc).__name__}: {exc}")


def hub_checks(t: Target, python: Path, labels_of: dict[str, list[str]]) -> Iterator[Check]:
    def one(task: str, model: str) -> Callable[[], str]:
        def run() -> str:
            args = {"url": t.url, "token": t.token, "task": task, "model": model, "text": ZS_TEXT, "labels": LABELS}
            if task == "text-classification":
                args["text"] = TEXT
            got = run_json([str(python), "-c", HUB_PROGRAM, json.dumps(args)])
            validate(f"huggingface.js/{task}.output.json", got["answer"])
            sorted_labels(got["answer"], LABELS if task != "text-classification" else labels_of[model])
            return f"huggingface_hub {got['version']}: {len(got['answer'])} labels, schema valid"

        return run

    version = subprocess.run(
        [str(python), "-c", "import huggingface_hub; print(huggingface_hub.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    client = f"huggingface_hub {version}"
    yield _check(client, "text-classification", one("text-classification", t.classifier))
    yield _check(client, "zero-shot-classification", one("zero-shot-classification", t.zero_shot))


def js_checks(t: Target, folder: Path, labels_of: dict[str, list[str]]) -> Iterator[Check]:
    program = folder / "readme_calls.mjs"
    program.write_text(JS_PROGRAM)

    def one(task: str, model: str) -> Callable[[], str]:
        def run() -> str:
            args = {"url": t.url, "token": t.token, "task": task, "model": model, "text": ZS_TEXT, "labels": LABELS}
            if task == "text-classification":
                args["text"] = TEXT
            got = run_json(["node", str(program), json.dumps(args)], cwd=folder)
            validate(f"huggingface.js/{task}.output.json", got["answer"])
            sorted_labels(got["answer"], LABELS if task != "text-classification" else labels_of[model])
            return f"@huggingface/inference {got['version']}: README call, schema valid"

        return run

    yield _check("@huggingface/inference (node)", "text-classification", one("text-classification", t.classifier))
    yield _check(
        "@huggingface/inference (node)", "zero-shot-classification", one("zero-shot-classification", t.zero_shot)
    )


def snippet_checks(t: Target, labels_of: dict[str, list[str]], node: bool) -> Iterator[Check]:
    """The seeds' snippets: curl, Python requests (urllib sends the same request), and Node's fetch, for the
    HF route of both tasks and Cloudflare's route."""
    tc_body = {"inputs": TEXT}
    zs_body = {"inputs": ZS_TEXT, "parameters": {"candidate_labels": LABELS}}

    def hf(model: str, body: Any, task: str, labels: list[str], sender: str) -> Callable[[], str]:
        def run() -> str:
            url = f"{t.url}/models/{model}"
            if sender == "curl":
                out = subprocess.run(
                    ["curl", "-s", url, "-X", "POST", "-d", json.dumps(body), "-H", "Content-Type: application/json",
                     "-H", f"Authorization: Bearer {t.token}"],
                    capture_output=True, text=True, check=True, timeout=60,
                )  # fmt: skip
                answer = json.loads(out.stdout)
            elif sender == "fetch":
                got = run_json(["node", "--input-type=module", "-e", FETCH_PROGRAM, json.dumps(
                    {"url": url, "token": t.token, "body": body})])  # fmt: skip
                answer = got["answer"]
            else:
                status, answer = post(url, body, t.token)
                if status != 200:
                    raise AssertionError(f"HTTP {status}: {answer}")
            per_input = answer[0] if task == "text-classification" else answer
            validate(f"huggingface.js/{task}.output.json", per_input)
            sorted_labels(per_input, labels)
            return "schema valid"

        return run

    senders = ["python"] + (["curl"] if shutil.which("curl") else []) + (["fetch"] if node else [])
    for sender in senders:
        client = {
            "python": "seed snippet: Python requests",
            "curl": "seed snippet: curl",
            "fetch": "seed snippet: JS fetch",
        }[sender]
        yield _check(client, "text-classification", hf(t.classifier, tc_body, "text-classification",
                                                         labels_of[t.classifier], sender))  # fmt: skip
        yield _check(client, "zero-shot-classification", hf(t.zero_shot, zs_body, "zero-shot-classification",
                                                              LABELS, sender))  # fmt: skip

    def cloudflare() -> str:
        status, answer = post(f"{t.url}/client/v4/accounts/local/ai/run/{t.classifier}", {"text": TEXT}, t.token)
        if status != 200 or answer.get("success") is not True:
            raise AssertionError(f"HTTP {status}: {answer}")
        validate("huggingface.js/text-classification.output.json", answer["result"])
        sorted_labels(answer["result"], labels_of[t.classifier])
        return "envelope and result schema valid"

    yield _check("seed snippet: Cloudflare", "text-classification", cloudflare)


def rerank_checks(t: Target) -> Iterator[Check]:
    def tei() -> str:
        status, answer = post(f"{t.url}/rerank", {"query": QUERY, "texts": DOCUMENTS, "return_text": True}, t.token)
        if status != 200:
            raise AssertionError(f"HTTP {status}: {answer}")
        validate("tei/rerank.json#RerankResponse", answer)
        status, error = post(f"{t.url}/rerank", {"query": QUERY, "texts": []}, t.token)
        validate("tei/rerank.json#ErrorResponse", error)
        if (status, error["error_type"]) != (400, "Empty"):
            raise AssertionError(f"an empty batch answered {status} {error}")
        return "answer and error schema valid; empty batch -> 400 Empty"

    def cohere(schema: str, version: str) -> Callable[[], str]:
        def run() -> str:
            body = {"model": t.reranker, "query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": True}
            status, answer = post(f"{t.url}/{version}/rerank", body, t.token)
            if status != 200:
                raise AssertionError(f"HTTP {status}: {answer}")
            validate(schema, answer)
            if len(answer["results"]) != 2 or answer["results"][0]["document"]["text"] not in DOCUMENTS:
                raise AssertionError(f"top_n / documents not honoured: {answer}")
            return "schema valid, top_n and return_documents honoured"

        return run

    yield _check("TEI /rerank", "rerank", tei)
    yield _check("Cohere /v1/rerank", "rerank", cohere("rerank/cohere-v1.json", "v1"))
    yield _check("Cohere /v2/rerank", "rerank", cohere("rerank/cohere-v1.json", "v2"))
    yield _check("Jina /v1/rerank", "rerank", cohere("rerank/jina.json", "v1"))


def labels(t: Target) -> dict[str, list[str]]:
    request = urllib.request.Request(f"{t.url}/models/{t.classifier}", headers={"Authorization": f"Bearer {t.token}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return {t.classifier: json.loads(r.read())["labels"]}


def run_checks(
    t: Target, cache: Path, hub_specs: tuple[str, ...] = ("huggingface_hub>=2,<3", "huggingface_hub==0.36.2"),
    js_spec: str | None = "@huggingface/inference@4",
) -> list[Check]:  # fmt: skip
    """Every check; a client whose environment cannot be made is one failed line, not an exception."""
    checks: list[Check] = []
    labels_of = labels(t)
    for spec in hub_specs:
        try:
            python = hub_python(cache, spec)
        except subprocess.CalledProcessError as exc:
            checks.append(Check(spec, "-", False, f"could not install: {exc}"))
            continue
        checks += hub_checks(t, python, labels_of)
    node = shutil.which("node") is not None and shutil.which("npm") is not None
    if js_spec and node:
        try:
            checks += js_checks(t, js_dir(cache, js_spec), labels_of)
        except subprocess.CalledProcessError as exc:
            checks.append(Check(js_spec, "-", False, f"could not install: {exc}"))
    checks += snippet_checks(t, labels_of, node)
    checks += rerank_checks(t)
    return checks


@contextmanager
def serve(dirs: list[str], token: str) -> Iterator[str]:
    """`engine serve DIR...` on a free 127.0.0.1 port, until the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = Path(sys.executable).with_name("engine")
    tokens = tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False)  # noqa: SIM115  (removed below)
    tokens.write(token + "\n")
    tokens.close()
    cmd = [str(engine), "serve", *dirs, "--host", "127.0.0.1", "--port", str(port), "--token-file", tokens.name]
    log = tempfile.TemporaryFile()  # noqa: SIM115  (read back after the server exits, closed with it)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"engine serve exited: {log.read().decode(errors='replace')}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        Path(tokens.name).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", nargs=3, metavar=("CLASSIFIER", "ZERO_SHOT", "RERANKER"), help="model directories")
    p.add_argument("--url", help="a running engine serve (with --classifier, --zero-shot, --reranker ids)")
    p.add_argument("--classifier")
    p.add_argument("--zero-shot")
    p.add_argument("--reranker")
    p.add_argument("--token", default="check-clients-token", help="the server's token (default: %(default)s)")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "offline-textclf-engine" / "clients")
    a = p.parse_args(argv)
    if a.serve:
        ids = [Path(d).name for d in a.serve]
        with serve(a.serve, a.token) as url:
            checks = run_checks(Target(url, a.token, *ids), a.cache_dir)
    elif a.url and a.classifier and a.zero_shot and a.reranker:
        checks = run_checks(Target(a.url, a.token, a.classifier, a.zero_shot, a.reranker), a.cache_dir)
    else:
        p.error("give --serve DIR DIR DIR, or --url with --classifier, --zero-shot and --reranker")
    for c in checks:
        print(c.line())
    print(f"{sum(c.ok for c in checks)} passed, {sum(not c.ok for c in checks)} failed")
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
