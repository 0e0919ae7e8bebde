#!/usr/bin/env python
"""Train the project's default model: language identification, from Debian's translated manual pages.

    python scripts/train_default_model.py [--output engine/default_model] [--work-dir DIR] [--threads N]
    python scripts/train_default_model.py --evaluate engine/default_model

One command: it fetches the Debian packages of manual pages and WordNet (`apt-get download`, no root needed; or
.deb files already in --deb-dir), turns their roff into plain sentences, splits them by page (a page held out is
held out in every language, so neither it nor its translations are trained on), trains a unigram tokenizer and a
small BERT classifier from scratch on the CPU, measures it on the held-out pages (whole sentences and 2-4 word
snippets), exports it with the project's own exporter (scripts/export_models.py: int8 with its gate), measures
the export through `engine.TextClassifier`, and writes MODEL_CARD.md into the model directory and
tests/data/default_model_heldout.tsv. `--evaluate DIR` only measures an exported model (no torch needed).

Needs the export extra (torch, transformers, optimum) and Debian's `apt-get` (or the .deb files). Everything is
seeded. About 8 minutes of CPU time; 18 minutes of wall time on a busy shared 2-core machine (--threads 1).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # a clone that was not pip-installed

DEFAULT_OUTPUT = REPO / "engine" / "default_model"
DEFAULT_WORK_DIR = Path.home() / ".cache" / "offline-textclf-engine" / "default-model-build"
HELDOUT_TSV = REPO / "tests" / "data" / "default_model_heldout.tsv"
SEED = 20240611


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1, as papluca/xlm-roberta-base-language-detection labels them
    name: str
    packages: tuple[str, ...]  # Debian packages with its manual pages
    dirs: tuple[str, ...]  # their directories under usr/share/man
    script: str  # "latin", "cyrillic", "han" or "japanese": what most letters of a sentence must be


# Debian 12 (bookworm) package names. manpages-l10n (GPL-3+) has the translations; manpages / manpages-dev are the
# English Linux man-pages project; manpages-ja, manpages-zh and manpages-tr are packaged on their own.
LANGUAGES: tuple[Language, ...] = (
    Language(
        "en", "English", ("manpages", "manpages-dev"), ("man1", "man2", "man3", "man4", "man5", "man7", "man8"), "latin"
    ),
    Language("de", "German", ("manpages-de", "manpages-de-dev"), ("de",), "latin"),
    Language("fr", "French", ("manpages-fr", "manpages-fr-dev"), ("fr",), "latin"),
    Language("es", "Spanish", ("manpages-es", "manpages-es-dev"), ("es",), "latin"),
    Language("it", "Italian", ("manpages-it", "manpages-it-dev"), ("it",), "latin"),
    Language("pt", "Portuguese", ("manpages-pt-br", "manpages-pt-br-dev"), ("pt_BR",), "latin"),
    Language("nl", "Dutch", ("manpages-nl", "manpages-nl-dev"), ("nl",), "latin"),
    Language("pl", "Polish", ("manpages-pl", "manpages-pl-dev"), ("pl",), "latin"),
    Language("cs", "Czech", ("manpages-cs", "manpages-cs-dev"), ("cs",), "latin"),
    Language("sv", "Swedish", ("manpages-sv",), ("sv",), "latin"),
    Language("da", "Danish", ("manpages-da", "manpages-da-dev"), ("da",), "latin"),
    Language("fi", "Finnish", ("manpages-fi",), ("fi",), "latin"),
    Language("hu", "Hungarian", ("manpages-hu",), ("hu",), "latin"),
    Language("tr", "Turkish", ("manpages-tr",), ("tr",), "latin"),
    Language("vi", "Vietnamese", ("manpages-vi",), ("vi",), "latin"),
    Language("ru", "Russian", ("manpages-ru", "manpages-ru-dev"), ("ru",), "cyrillic"),
    Language("uk", "Ukrainian", ("manpages-uk", "manpages-uk-dev"), ("uk",), "cyrillic"),
    Language("ja", "Japanese", ("manpages-ja", "manpages-ja-dev"), ("ja",), "japanese"),
    Language("zh", "Chinese", ("manpages-zh",), ("zh_CN", "zh_TW"), "han"),
)


# ---------------------------------------------------------------------------------------------------------------
# Data: Debian packages -> pages -> plain sentences


class DataError(RuntimeError):
    """The corpus could not be had; the message says what to run."""


def fetch_debs(packages: Sequence[str], deb_dir: Path) -> dict[str, Path]:
    """package -> its .deb in deb_dir, downloaded with `apt-get download` when missing (no root needed)."""
    deb_dir.mkdir(parents=True, exist_ok=True)

    def present() -> dict[str, Path]:
        found: dict[str, Path] = {}
        for deb in sorted(deb_dir.glob("*.deb")):
            found.setdefault(deb.name.split("_", 1)[0], deb)
        return found

    missing = [p for p in packages if p not in present()]
    if missing:
        if shutil.which("apt-get") is None:
            raise DataError(
                f"the Debian packages {' '.join(missing)} are needed and there is no apt-get here: copy their .deb "
                f"files into {deb_dir} (or pass --deb-dir)"
            )
        print(f"apt-get download {' '.join(missing)}", flush=True)
        run = subprocess.run(["apt-get", "download", *missing], cwd=deb_dir, capture_output=True, text=True)
        if run.returncode != 0:
            detail = (run.stderr.strip().splitlines() or ["no message"])[-1]
            raise DataError(
                f"apt-get download {' '.join(missing)} failed ({detail}). Run `apt-get update` (as root) and try "
                f"again, or put the .deb files of these packages in {deb_dir} (or pass --deb-dir)"
            )
    found = present()
    still = [p for p in packages if p not in found]
    if still:
        raise DataError(f"no .deb for {' '.join(still)} in {deb_dir}")
    return {p: found[p] for p in packages}


def unpack(debs: dict[str, Path], root: Path) -> dict[str, str]:
    """Extract each .deb under root/<package>; returns package -> version."""
    versions = {}
    for package, deb in debs.items():
        target = root / package
        if not target.is_dir():
            tmp = root / f".{package}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            tmp.rename(target)
        versions[package] = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
        ).stdout.strip()
    return versions


@dataclass(frozen=True)
class Page:
    lang: str
    key: str  # "man1/ls.1": the same page in every language
    paragraphs: tuple[str, ...]


ENCODINGS = {"ja": ("utf-8", "euc-jp"), "zh": ("utf-8", "gb18030", "big5")}


def read_pages(root: Path) -> list[Page]:
    """Every manual page (regular .gz files; `.so` links and symlinks skipped) of every language under root."""
    pages = []
    for lang in LANGUAGES:
        for package in lang.packages:
            man = root / package / "usr" / "share" / "man"
            for d in lang.dirs:
                for path in sorted((man / d).rglob("*.gz")):
                    if path.is_symlink():
                        continue
                    raw = gzip.decompress(path.read_bytes())
                    for enc in ENCODINGS.get(lang.code, ("utf-8",)):
                        try:
                            text = raw.decode(enc)
                            break
                        except UnicodeDecodeError:
                            continue
                    else:
                        continue
                    if text.lstrip().startswith(".so "):
                        continue
                    key = f"{path.parent.name}/{path.name[:-3]}"
                    pages.append(Page(lang.code, key, tuple(roff_paragraphs(text))))
    return pages


# Everyday English, which the manual pages lack: the example sentences of WordNet 3.0's synsets
WORDNET = "wordnet-base"
WORDNET_EXAMPLE = re.compile(r'"([^"]+)"')


def read_wordnet(root: Path) -> list[Page]:
    """One English page per WordNet synset that has example sentences (its key: part of speech and offset)."""
    pages = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = root / WORDNET / "usr" / "share" / "wordnet" / f"data.{pos}"
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(" ") or "|" not in line:  # the license header
                continue
            examples = tuple(WORDNET_EXAMPLE.findall(line.split("|", 1)[1]))
            if examples:
                pages.append(Page("en", f"wordnet/{pos}/{line.split(' ', 1)[0]}", examples))
    return pages


# roff -> text. Only what manual pages use: font and size changes, special characters, the man macros.
SPECIAL = {
    "em": "—",
    "en": "–",
    "hy": "-",
    "mi": "-",
    "lq": "“",
    "rq": "”",
    "oq": "‘",
    "cq": "’",
    "aq": "'",
    "dq": '"',
    "Fo": "«",
    "Fc": "»",
    "fo": "‹",
    "fc": "›",
    "bu": "•",
    "co": "©",
    "rg": "®",
    "tm": "™",
    "de": "°",
    "<=": "≤",
    ">=": "≥",
    "!=": "≠",
    "mu": "×",
    "di": "÷",
    "+-": "±",
    "->": "→",
    "<-": "←",
    "ti": "~",
    "ha": "^",
    "rs": "\\",
    "sl": "/",
    "ga": "`",
    "aa": "´",
    "bv": "|",
    "ba": "|",
    "lh": "☜",
    "rh": "☞",
    "sc": "§",
    "ps": "¶",
    "Eu": "€",
    "eu": "€",
    "Po": "£",
    "Ye": "¥",
    "ct": "¢",
    "pc": "·",
    "pl": "+",
    "eq": "=",
    "**": "*",
}
ESCAPE = re.compile(
    r"""\\(?:
        \((?P<p2>..)                      # \(xx
      | \[(?P<br>[^\]]*)\]                # \[name]
      | \*(?:\((?P<s2>..)|\[(?P<sb>[^\]]*)\]|(?P<s1>.))   # strings \*x \*(xx \*[name]
      | f(?:\(..|\[[^\]]*\]|.)            # font
      | s[-+]?(?:\d|\(\d\d|\[\d+\])       # size
      | [nkgmMFY](?:\(..|\[[^\]]*\]|.)    # registers, marks, colours
      | [hvwlLxNDboZXRA]'[^']*'           # horizontal/vertical motion, width, line, ...
      | (?P<ch>.)                         # any other one-character escape
    )""",
    re.VERBOSE,
)
STRINGS = {"lq": "“", "rq": "”", "R": "®", "Tm": "™", "tm": "™"}
ONE_CHAR = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "'": "´", "`": "`", ".": "."}
TEXT_MACROS = {"B", "I", "SM", "SB", "BR", "BI", "IB", "IR", "RI", "RB", "UR", "MT", "Q", "Sq", "Dq"}
ALTERNATING = {"BR", "BI", "IB", "IR", "RI", "RB"}
# Headings of the sections that hold code (synopsis, library), as the pages of these languages spell them
CODE_SECTIONS = frozenset(
    [
        "SYNOPSIS",
        "ÜBERSICHT",
        "SINOPSIS",
        "SINTASSI",
        "SINOPSE",
        "SAMENVATTING",
        "SKŁADNIA",
        "POUŽITÍ",
        "YLEISKATSAUS",
        "ÖSSZEGZÉS",
        "KULLANIM",
        "СИНТАКСИС",
        "書式",
        "概述",
        "总览",
        "大綱",
        "LIBRARY",
        "BIBLIOTHEK",
        "BIBLIOTHÈQUE",
        "BIBLIOTECA",
        "BIBLIOTHEEK",
        "BIBLIOTEKA",
        "KNIHOVNA",
        "БИБЛИОТЕКА",
        "БІБЛІОТЕКА",
    ]
) | {"TÓM TẮT", "КОРОТКИЙ ОПИС"}
SKIP_BLOCKS = {"nf": "fi", "EX": "EE", "TS": "TE", "EQ": "EN", "de": "..", "ig": "..", "am": "..", "PS": "PE"}


def _unescape(line: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group("p2") is not None:
            return SPECIAL.get(m.group("p2"), "")
        if m.group("br") is not None:
            name = m.group("br")
            if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
                return chr(int(name[1:], 16))
            return SPECIAL.get(name, "")
        for g in ("s2", "sb", "s1"):
            if m.group(g) is not None:
                return STRINGS.get(m.group(g), "")
        if m.group("ch") is not None:
            return ONE_CHAR.get(m.group("ch"), "")
        return ""

    return ESCAPE.sub(sub, line)


def _macro_args(rest: str) -> list[str]:
    return [a[1:-1] if len(a) >= 2 and a[0] == a[-1] == '"' else a for a in re.findall(r'"[^"]*"|\S+', rest)]


def roff_paragraphs(source: str) -> Iterator[str]:
    """The running text of a manual page, paragraph by paragraph: headings, option tags, synopses, examples,
    tables and comments dropped."""
    paragraph: list[str] = []
    skip_until: str | None = None
    skip_section = False
    take_next = True  # False for the tag line after .TP
    for raw in source.splitlines():
        line = raw.split('\\"', 1)[0] if '\\"' in raw else raw
        if skip_until is not None:
            if line.strip().startswith("." + skip_until) or (skip_until == ".." and line.strip() == ".."):
                skip_until = None
            continue
        if line.startswith((".", "'")):
            parts = line[1:].strip().split(None, 1)
            if not parts:
                continue
            name, rest = parts[0], (parts[1] if len(parts) > 1 else "")
            if name in SKIP_BLOCKS:
                skip_until = SKIP_BLOCKS[name]
                continue
            if name in TEXT_MACROS:
                args = [_unescape(a) for a in _macro_args(rest)]
                text = "".join(args) if name in ALTERNATING else " ".join(args)
                if take_next and not skip_section:
                    paragraph.append(text)
                take_next = True
                continue
            if paragraph:
                yield " ".join(paragraph)
                paragraph = []
            if name == "SH":
                skip_section = rest.strip('" ').upper() in CODE_SECTIONS
            take_next = name != "TP"
            continue
        text = _unescape(line).strip()
        if not text:
            if paragraph:
                yield " ".join(paragraph)
                paragraph = []
            continue
        if not take_next:  # .TP's tag: an option name, no prose
            take_next = True
            continue
        if not skip_section:
            paragraph.append(text)
    if paragraph:
        yield " ".join(paragraph)


CJK = r"\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
CJK_GAP = re.compile(rf"(?<=[{CJK}]) (?=[{CJK}])")
SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=[\"'“«„(¡¿]?[A-ZÀ-ÖØ-ÞĀ-ſА-ЯЁЂ-ЏΑ-Ω0-9])|(?<=[。！？])")


def sentences(paragraph: str) -> Iterator[str]:
    text = CJK_GAP.sub("", re.sub(r"\s+", " ", paragraph)).strip()
    for s in SENTENCE_END.split(text):
        s = s.strip()
        if s:
            yield s


def _script(ch: str) -> str:
    o = ord(ch)
    if o < 0x250 or 0x1E00 <= o < 0x1F00:
        return "latin"
    if 0x400 <= o < 0x530:
        return "cyrillic"
    if 0x370 <= o < 0x400 or 0x1F00 <= o < 0x2000:
        return "greek"
    if 0x3040 <= o < 0x3100 or 0x31F0 <= o < 0x3200 or 0xFF66 <= o < 0xFFA0:
        return "kana"
    if 0x3400 <= o < 0xA000 or 0xF900 <= o < 0xFB00:
        return "han"
    return "other"


# English words that no other language here uses as a common word: a translated page keeps some paragraphs in
# English, which must not be taught as that language.
ENGLISH_MARKERS = frozenset(
    [
        "the",
        "and",
        "with",
        "which",
        "this",
        "that",
        "these",
        "those",
        "from",
        "were",
        "been",
        "have",
        "when",
        "should",
        "would",
        "there",
        "their",
        "into",
        "only",
        "than",
        "such",
        "other",
        "each",
        "must",
        "because",
        "however",
        "between",
        "following",
    ]
)
CODE_CHARS = set("/_=<>{}[]|\\@#$%&*`")


def keep(sentence: str, lang: Language) -> bool:
    """Prose in the page's language: long enough, mostly letters of its script, little code, not English."""
    cjk = lang.script in ("han", "japanese")
    if not (8 if cjk else 25) <= len(sentence) <= 400:
        return False
    words = sentence.split()
    if not cjk and len(words) < 4:
        return False
    letters = [c for c in sentence if c.isalpha()]
    visible = sum(1 for c in sentence if not c.isspace())
    if len(letters) < 0.75 * visible or sum(c in CODE_CHARS for c in sentence) > 2:
        return False
    scripts = Counter(_script(c) for c in letters)
    if cjk:
        han, kana = scripts["han"], scripts["kana"]
        if lang.script == "japanese" and (kana == 0 or han + kana < 0.6 * len(letters)):
            return False
        return not (lang.script == "han" and (kana > 0 or han < 0.6 * len(letters)))
    if scripts[lang.script] < 0.9 * len(letters):
        return False
    if lang.code != "en":
        marked = sum(w.lower().strip(".,;:()\"'") in ENGLISH_MARKERS for w in words)
        if marked >= 2 or (marked and len(words) <= 8):
            return False
    return True


@dataclass(frozen=True)
class Sentence:
    lang: str
    page: str
    text: str
    heldout: bool


def heldout_page(key: str, percent: int) -> bool:
    """A page is held out by its name, in every language at once."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < percent


def build_corpus(pages: Iterable[Page], heldout_percent: int = 12) -> list[Sentence]:
    """Deduplicated sentences (first occurrence wins; a sentence found in two languages, or in a translation and
    the English pages, is dropped everywhere), each with its page's split."""
    by_code = {lang.code: lang for lang in LANGUAGES}
    seen: dict[str, Sentence] = {}
    ambiguous: set[str] = set()
    for page in pages:
        lang = by_code[page.lang]
        for paragraph in page.paragraphs:
            for s in sentences(paragraph):
                s = unicodedata.normalize("NFC", s)
                if not keep(s, lang):
                    continue
                norm = s.casefold()
                if norm in seen:
                    if seen[norm].lang != page.lang:
                        ambiguous.add(norm)
                    continue
                seen[norm] = Sentence(page.lang, page.key, s, heldout_page(page.key, heldout_percent))
    kept = [s for norm, s in seen.items() if norm not in ambiguous]
    # Paragraphs a translation left in English: most of their words are frequent English words.
    english = Counter(w for s in kept if s.lang == "en" for w in WORD.findall(s.text.casefold()))
    frequent = {w for w, n in english.items() if n >= 20}

    def english_like(s: Sentence) -> bool:
        words = WORD.findall(s.text.casefold())
        return bool(words) and sum(w in frequent for w in words) > 0.7 * len(words)

    return [s for s in kept if s.lang == "en" or by_code[s.lang].script != "latin" or not english_like(s)]


WORD = re.compile(r"[^\W\d_]+")


# ---------------------------------------------------------------------------------------------------------------
# Training examples: whole sentences, snippets of a few words (what users type), and runs of sentences of one
# page (so that every position of the 128-token window is trained)


def is_cjk(lang: str) -> bool:
    return lang in ("ja", "zh")


def snippet(text: str, lang: str, rng: random.Random, shortest: int, longest: int) -> str:
    """A run of `shortest`..`longest` words (characters for Chinese and Japanese, which need no spaces)."""
    if is_cjk(lang):
        chars = text.replace(" ", "")
        n = min(len(chars), rng.randint(shortest + 1, 2 * longest))
        start = rng.randint(0, len(chars) - n)
        return chars[start : start + n]
    words = text.split()
    n = min(len(words), rng.randint(shortest, longest))
    start = rng.randint(0, len(words) - n)
    return " ".join(words[start : start + n])


def epoch_examples(by_lang: dict[str, list[Sentence]], per_lang: int, rng: random.Random) -> list[tuple[str, str]]:
    """(lang, text): `per_lang` examples of each language (small languages repeat, each time cut differently)."""
    out = []
    for lang, items in sorted(by_lang.items()):
        order = [i for _ in range(-(-per_lang // len(items))) for i in rng.sample(range(len(items)), len(items))]
        for i in order[:per_lang]:
            roll = rng.random()
            if roll < 0.35:
                out.append((lang, snippet(items[i].text, lang, rng, 1, 6)))
            elif roll < 0.45:  # the sentences that follow it on its page, up to a paragraph
                text, j = items[i].text, i + 1
                while j < len(items) and items[j].page == items[i].page and len(text) < rng.randint(200, 700):
                    text += ("" if is_cjk(lang) else " ") + items[j].text
                    j += 1
                out.append((lang, text))
            else:
                out.append((lang, items[i].text))
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer and model


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int):  # -> PreTrainedTokenizerFast
    """A unigram (SentencePiece-style) tokenizer over every script of the corpus, NFKC-normalized, case kept,
    with BERT's [CLS] text [SEP] frame."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="[UNK]", max_piece_length=12
    )
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


@dataclass(frozen=True)
class Hyper:
    vocab_size: int = 16000
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 512
    max_length: int = 128
    per_lang: int = 3000  # training examples per language and epoch
    epochs: int = 2
    batch: int = 64
    lr: float = 1e-3
    warmup: float = 0.05


def build_model(hyper: Hyper, labels: Sequence[str], vocab_size: int):  # -> BertForSequenceClassification
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hyper.hidden,
        num_hidden_layers=hyper.layers,
        num_attention_heads=hyper.heads,
        intermediate_size=hyper.intermediate,
        max_position_embeddings=hyper.max_length,
        type_vocab_size=2,
        pad_token_id=0,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    return BertForSequenceClassification(config)


def batches(
    tokenizer,
    examples: Sequence[tuple[str, str]],
    label_ids: dict[str, int],
    size: int,
    max_length: int,
    rng: random.Random,
) -> list[tuple[list[list[int]], list[int]]]:
    """Batches of similar lengths (less padding), in random order."""
    ids = tokenizer([t for _, t in examples], truncation=True, max_length=max_length)["input_ids"]
    rows = [(row, label_ids[lang]) for row, (lang, _) in zip(ids, examples)]
    out = []
    chunk = size * 50
    for a in range(0, len(rows), chunk):
        part = sorted(rows[a : a + chunk], key=lambda r: len(r[0]))
        out += [part[b : b + size] for b in range(0, len(part), size)]
    rng.shuffle(out)
    return [([r for r, _ in b], [y for _, y in b]) for b in out]


def tensors(rows: Sequence[Sequence[int]]):
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return input_ids, mask


def train(model, tokenizer, by_lang: dict[str, list[Sentence]], labels: Sequence[str], hyper: Hyper) -> None:
    import torch

    label_ids = {label: i for i, label in enumerate(labels)}
    rng = random.Random(SEED)
    steps_per_epoch = -(-hyper.per_lang * len(labels) // hyper.batch)
    total = steps_per_epoch * hyper.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=hyper.lr, weight_decay=0.01)
    warmup = max(1, int(hyper.warmup * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / (total - warmup)))
    )
    model.train()
    step, started = 0, time.time()
    for epoch in range(hyper.epochs):
        examples = epoch_examples(by_lang, hyper.per_lang, rng)
        running = 0.0
        for i, (rows, ys) in enumerate(batches(tokenizer, examples, label_ids, hyper.batch, hyper.max_length, rng)):
            input_ids, mask = tensors(rows)
            loss = model(input_ids=input_ids, attention_mask=mask, labels=torch.tensor(ys)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.item()
            step += 1
            if (i + 1) % 200 == 0:
                print(
                    f"epoch {epoch + 1} step {i + 1}/{steps_per_epoch} loss {running / 200:.4f} "
                    f"({time.time() - started:.0f} s)",
                    flush=True,
                )
                running = 0.0
    model.eval()


def torch_predict(model, tokenizer, texts: Sequence[str], labels: Sequence[str], max_length: int) -> list[str]:
    import torch

    out: list[str] = []
    with torch.no_grad():
        for a in range(0, len(texts), 128):
            rows = tokenizer(list(texts[a : a + 128]), truncation=True, max_length=max_length)["input_ids"]
            input_ids, mask = tensors(rows)
            out += [labels[i] for i in model(input_ids=input_ids, attention_mask=mask).logits.argmax(-1).tolist()]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Evaluation sets, export, model card


@dataclass(frozen=True)
class EvalSet:
    long: list[tuple[str, str]]  # (lang, a whole held-out sentence)
    short: list[tuple[str, str]]  # (lang, 2-4 words of it; 3-8 characters in Chinese and Japanese)


def eval_set(heldout: dict[str, list[Sentence]], per_lang: int) -> EvalSet:
    rng = random.Random(SEED + 1)
    long, short = [], []
    for lang, items in sorted(heldout.items()):
        for s in rng.sample(items, min(per_lang, len(items))):
            long.append((lang, s.text))
            short.append((lang, snippet(s.text, lang, rng, 2, 4)))
    return EvalSet(long, short)


def accuracy(pairs: Sequence[tuple[str, str]], predicted: Sequence[str]) -> tuple[float, dict[str, float]]:
    """(macro accuracy: the mean over languages, per-language accuracy)."""
    right: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for (lang, _), guess in zip(pairs, predicted):
        seen[lang] += 1
        right[lang] += guess == lang
    per = {lang: right[lang] / seen[lang] for lang in sorted(seen)}
    return sum(per.values()) / len(per), per


def engine_predict(model_dir: Path, texts: Sequence[str]) -> list[str]:
    from engine import TextClassifier

    clf = TextClassifier.load(model_dir)
    return [p.outputs[0].label for p in clf.predict(list(texts))]


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def corpus(args: argparse.Namespace) -> tuple[list[Sentence], dict[str, str]]:
    """The deduplicated sentences of every language, and the Debian package versions they came from."""
    packages = [p for lang in LANGUAGES for p in lang.packages] + [WORDNET]
    debs = fetch_debs(packages, args.deb_dir or args.work_dir / "debs")
    root = args.work_dir / "packages"
    versions = unpack(debs, root)
    started = time.time()
    sentences_ = build_corpus(read_pages(root) + read_wordnet(root), args.heldout_percent)
    print(f"corpus: {len(sentences_)} sentences ({time.time() - started:.0f} s)", flush=True)
    return sentences_, versions


def split(sentences_: Sequence[Sentence]) -> tuple[dict[str, list[Sentence]], dict[str, list[Sentence]]]:
    train_, heldout = defaultdict(list), defaultdict(list)
    for s in sentences_:
        (heldout if s.heldout else train_)[s.lang].append(s)
    return dict(train_), dict(heldout)


def evaluate_only(args: argparse.Namespace) -> int:
    sentences_, _ = corpus(args)
    _, heldout = split(sentences_)
    ev = eval_set(heldout, args.eval_per_lang)
    for name, pairs in (("long", ev.long), ("short", ev.short)):
        macro, per = accuracy(pairs, engine_predict(args.evaluate, [t for _, t in pairs]))
        print(f"{args.evaluate} held-out {name} ({len(pairs)} texts): macro accuracy {macro:.2%}")
        print("  " + " ".join(f"{lang} {acc:.1%}" for lang, acc in per.items()))
    return 0


def write_heldout_tsv(heldout: dict[str, list[Sentence]], path: Path, per_lang: int = 10) -> None:
    """`per_lang` held-out sentences of each language (40-200 characters; Chinese and Japanese 15-100) for a test."""
    rng = random.Random(SEED + 2)
    lines = []
    for lang, items in sorted(heldout.items()):
        low, high = (15, 100) if is_cjk(lang) else (40, 200)
        fit = [s for s in items if low <= len(s.text) <= high and "\t" not in s.text]
        lines += [f"{lang}\t{s.text}" for s in rng.sample(fit, min(per_lang, len(fit)))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def calibration_texts(train_: dict[str, list[Sentence]], path: Path, per_lang: int = 12) -> None:
    """The export's verification texts (its fp32 and int8 checks): training sentences and snippets of each
    language, so that its int8 gate measures the inputs this model is for."""
    rng = random.Random(SEED + 3)
    lines = ["# training sentences of the default model, and snippets of them: the export's checks run on these"]
    for lang, items in sorted(train_.items()):
        for s in rng.sample(items, per_lang):
            lines.append(s.text)
            lines.append(snippet(s.text, lang, rng, 1, 4))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_portable(model_dir: Path) -> None:
    """The oldest tokenizers the package claims (0.15) needs Metaspace's `add_prefix_space`, which newer releases
    still read (same token ids: tested across versions); the manifest names the model rather than the temporary
    checkpoint it was exported from, and records the tokenizer's new sha256."""
    tok_path, manifest_path = model_dir / "tokenizer.json", model_dir / "manifest.json"
    tok = json.loads(tok_path.read_text(encoding="utf-8"))
    for key in ("pre_tokenizer", "decoder"):
        if tok.get(key, {}).get("type") == "Metaspace":
            tok[key]["add_prefix_space"] = True
    raw = json.dumps(tok, ensure_ascii=False, indent=2)
    tok_path.write_text(raw, encoding="utf-8")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["source"] = "offline-textclf-engine/default-langid"
    manifest["files"]["tokenizer.json"] = hashlib.sha256(raw.encode("utf-8")).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="model directory to write (default %(default)s)"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="downloads, corpus, checkpoint (default %(default)s)"
    )
    parser.add_argument(
        "--deb-dir",
        type=Path,
        help="take the .deb files from here (default: WORK_DIR/debs, filled by apt-get download)",
    )
    parser.add_argument(
        "--heldout-tsv", type=Path, default=HELDOUT_TSV, help="held-out sentences for a test (default %(default)s)"
    )
    parser.add_argument("--heldout-percent", type=int, default=12, help="pages held out, by name (default %(default)s)")
    parser.add_argument(
        "--eval-per-lang", type=int, default=300, help="held-out sentences measured per language (default %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=Hyper.epochs, help="default %(default)s")
    parser.add_argument(
        "--per-lang",
        type=int,
        default=Hyper.per_lang,
        help="training examples per language and epoch (default %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    parser.add_argument(
        "--evaluate", type=Path, metavar="MODEL_DIR", help="only measure an exported model on the held-out pages"
    )
    args = parser.parse_args(argv)
    try:
        if args.evaluate:
            return evaluate_only(args)
        return build(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    started = time.time()
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    hyper = Hyper(epochs=args.epochs, per_lang=args.per_lang)
    labels = [lang.code for lang in LANGUAGES]

    sentences_, versions = corpus(args)
    train_, heldout = split(sentences_)
    missing = [code for code in labels if code not in train_ or code not in heldout]
    if missing:
        raise DataError(f"no training or held-out sentences for {missing}: are the packages' pages there?")

    rng = random.Random(SEED)
    tok_texts = [s.text for lang in labels for s in rng.sample(train_[lang], min(2000, len(train_[lang])))]
    t0 = time.time()
    tokenizer = train_tokenizer(tok_texts, hyper.vocab_size, hyper.max_length)
    print(f"tokenizer: {len(tokenizer)} pieces ({time.time() - t0:.0f} s)", flush=True)

    model = build_model(hyper, labels, len(tokenizer))
    t0 = time.time()
    train(model, tokenizer, train_, labels, hyper)
    train_seconds = time.time() - t0
    print(f"trained in {train_seconds:.0f} s", flush=True)

    ev = eval_set(heldout, args.eval_per_lang)
    results: dict[str, dict[str, tuple[float, dict[str, float]]]] = {"fp32 (torch)": {}, "int8 (engine)": {}}
    for name, pairs in (("long", ev.long), ("short", ev.short)):
        got = torch_predict(model, tokenizer, [t for _, t in pairs], labels, hyper.max_length)
        results["fp32 (torch)"][name] = accuracy(pairs, got)
        print(f"fp32 held-out {name}: {results['fp32 (torch)'][name][0]:.2%}", flush=True)

    checkpoint = args.work_dir / "checkpoint"
    shutil.rmtree(checkpoint, ignore_errors=True)
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    calibration = args.work_dir / "calibration.txt"
    calibration_texts(train_, calibration)
    export_cmd = [
        sys.executable,
        str(REPO / "scripts" / "export_models.py"),
        str(checkpoint),
        "--output",
        str(args.output),
        "--calibration-file",
        str(calibration),
    ]
    print(" ".join(export_cmd), flush=True)
    t0 = time.time()
    subprocess.run(export_cmd, check=True)
    export_seconds = time.time() - t0
    make_portable(args.output)

    for name, pairs in (("long", ev.long), ("short", ev.short)):
        results["int8 (engine)"][name] = accuracy(pairs, engine_predict(args.output, [t for _, t in pairs]))
        print(f"int8 held-out {name}: {results['int8 (engine)'][name][0]:.2%}", flush=True)

    write_heldout_tsv(heldout, args.heldout_tsv)
    stats = {
        lang: (
            len(train_[lang]),
            len({s.page for s in train_[lang]}),
            len(heldout[lang]),
            len({s.page for s in heldout[lang]}),
        )
        for lang in labels
    }
    manifest = json.loads((args.output / "manifest.json").read_text(encoding="utf-8"))
    card = model_card(
        args,
        hyper,
        len(tokenizer),
        stats,
        versions,
        results,
        ev,
        manifest,
        {"train": train_seconds, "export": export_seconds, "total": time.time() - started},
    )
    (args.output / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    print(f"wrote {args.output} ({dir_size(args.output) / 1e6:.2f} MB) in {time.time() - started:.0f} s")
    return 0


LICENSES = {
    "manpages-l10n": "GPL-3+ (the translations, as Debian's copyright file says), over the licenses of the original "
    "pages",
    "manpages, manpages-dev": "the Linux man-pages project: per page, Linux-man-pages-copyleft, GPL-1+/2/2+, BSD-2/3/4-"
    "clause or Expat (Debian's copyright file lists them)",
    "manpages-ja, manpages-ja-dev": "JM Project: each translation under the license of its original page",
    "manpages-zh": "GFDL-1.2+ (Debian's copyright file; some files GPL-2+ or public domain)",
    "manpages-tr": "the original pages' licenses, else GNU GPL (Debian's copyright file)",
    WORDNET: "the WordNet 3.0 license (Princeton University; permissive, BSD-like)",
}


def model_card(
    args: argparse.Namespace,
    hyper: Hyper,
    vocab: int,
    stats: dict[str, tuple[int, int, int, int]],
    versions: dict[str, str],
    results: dict[str, dict[str, tuple[float, dict[str, float]]]],
    ev: EvalSet,
    manifest: dict,
    seconds: dict[str, float],
) -> str:
    names = {lang.code: lang.name for lang in LANGUAGES}
    packages = {lang.code: lang.packages + ((WORDNET,) if lang.code == "en" else ()) for lang in LANGUAGES}
    out = args.output
    size = dir_size(out) + 0  # the card itself is written after this
    recipe = manifest.get("quantization", {})
    int8 = results["int8 (engine)"]
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    verification = manifest.get("verification", {})
    lines = [
        "# Default model: language identification (19 languages)",
        "",
        "The model `engine` uses when no model is named: it tells which of 19 languages a text is in, with ISO",
        "639-1 labels as `papluca/xlm-roberta-base-language-detection` has them. A small BERT",
        "(BertForSequenceClassification) trained from scratch by this project on sentences of Debian's translated",
        "manual pages, exported to int8 by the project's own exporter (`scripts/export_models.py`, its int8 gate",
        "included).",
        "",
        "It knows manual-page prose best: technical text. Everyday English is covered by WordNet's example sentences;",
        "everyday phrases of the other languages are not in its data and are misread more often (`Bonjour, comment",
        "allez-vous ?` comes out `pt`, `Wie geht es dir?` `nl`). Texts in a language it does not know still get one of",
        "its 19 labels.",
        "",
        "## Labels",
        "",
        ", ".join(f"`{code}` {names[code]}" for code in names),
        "",
        "## Make it again",
        "",
        "```",
        f"python scripts/train_default_model.py --output engine/default_model --threads {args.threads}",
        "```",
        "",
        "Needs the export extra (`pip install -e '.[export]'`) and Debian's `apt-get` (it runs `apt-get download`,",
        "no root; or pass `--deb-dir` with the .deb files). Seeded: the same packages, seed and thread count give the",
        "same model.",
        f"Wall time of this build: {seconds['total'] / 60:.1f} min (training {seconds['train'] / 60:.1f} min, export "
        f"{seconds['export'] / 60:.1f} min) on {args.threads} thread(s) of a shared 2-core machine.",
        "",
        "## Data",
        "",
        "Sentences of the manual pages in these Debian 12 packages (downloaded with `apt-get download`), and for",
        "everyday English, which manual pages lack, the example sentences of WordNet 3.0's synsets (`wordnet-base`;",
        "a synset counts as a page):",
        "",
        "| package | version |",
        "| --- | --- |",
        *[f"| {p} | {v} |" for p, v in sorted(versions.items())],
        "",
        "Licenses of the text (the model holds no sentence of it; its tokenizer holds word pieces):",
        "",
        *[f"- {k}: {v}." for k, v in LICENSES.items()],
        "",
        "The roff of each page is read by a small parser in the script (fonts, escapes, man macros; synopses, examples",
        "and tables dropped) and cut into sentences. A sentence is kept when it is 25-400 characters and 4 words or",
        "more (Chinese and Japanese: 8-400 characters), at least 75% letters, at least 90% of them in its language's",
        "script, with little code, and, for a translation, not English (paragraphs left untranslated). Duplicates are",
        "dropped; a sentence found in two languages is dropped from both.",
        "",
        "Split by page: a page is held out when the sha256 of its name (`man1/ls.1`) puts it in "
        f"{args.heldout_percent} of 100 buckets,",
        "in every language at once, so neither a held-out page nor its translations are trained on.",
        "",
        "| label | packages | training sentences (pages) | held-out sentences (pages) |",
        "| --- | --- | --- | --- |",
        *[
            f"| {code} | {', '.join(packages[code])} | {tr} ({tp}) | {ho} ({hp}) |"
            for code, (tr, tp, ho, hp) in stats.items()
        ],
        "",
        "## Held-out accuracy",
        "",
        f"Macro accuracy (the mean over languages) on up to {args.eval_per_lang} held-out sentences per language",
        f"({len(ev.long)} texts), and on one snippet of each ({len(ev.short)} texts: 2-4 words, or 3-8 characters of",
        "Chinese and Japanese), as users type:",
        "",
        "| model | sentences | 2-4 word snippets |",
        "| --- | --- | --- |",
        *[f"| {name} | {r['long'][0]:.2%} | {r['short'][0]:.2%} |" for name, r in results.items()],
        "",
        "Per language (int8, the shipped model):",
        "",
        "| label | sentences | snippets |",
        "| --- | --- | --- |",
        *[f"| {code} | {int8['long'][1][code]:.1%} | {int8['short'][1][code]:.1%} |" for code in names],
        "",
        "Measure the shipped model again (needs the Debian packages, not torch):",
        "",
        "```",
        f"python scripts/train_default_model.py --evaluate {shown}",
        "```",
        "",
        "## Model",
        "",
        f"- Tokenizer: unigram (SentencePiece-style, `tokenizers`), {vocab} pieces trained on the training sentences,",
        "  NFKC, case kept; `[CLS] text [SEP]`.",
        f"- BERT: {hyper.layers} layers, hidden {hyper.hidden}, {hyper.heads} heads, FFN {hyper.intermediate}, window "
        f"{hyper.max_length} tokens; trained {hyper.epochs} epochs of {hyper.per_lang} examples per language (35% 1-6",
        "  word snippets, 10% runs of sentences of one page, the rest whole sentences), AdamW lr "
        f"{hyper.lr}, batch {hyper.batch}, warm-up then linear decay.",
        f"- Export: int8, recipe `{recipe.get('name', '?')}`; int8 vs fp32 top-1 agreement on the export's checks "
        f"{verification.get('int8_top1_agreement', float('nan')):.2%} (bound {MIN_AGREEMENT_TEXT}); the checks ran on "
        "training sentences and snippets of every language (`--calibration-file`).",
        f"- Installed size: {size / 1e6:.2f} MB (the directory, this card aside).",
        "",
    ]
    return "\n".join(lines)


MIN_AGREEMENT_TEXT = "99%"

if __name__ == "__main__":
    sys.exit(main())
