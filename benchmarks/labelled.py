"""Real labelled text for training the benchmark models offline: WordNet glosses labelled by lexicographer file.

Every noun synset of WordNet 3.0 (Debian's `wordnet-base`, data.noun) carries the file its lexicographer filed it
in (noun.animal, noun.plant, ...) and a gloss ("a large tree with ..."): real English with real topic labels.
The full benchmark needs it; --quick (and CI, which has no WordNet) uses CPython's documentation sentences labelled
by the documentation topic they come from, so the harness still trains real models on real labels in seconds.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

WORDNET_DIRS = (os.environ.get("WORDNET_DIR", ""), "/usr/share/wordnet", "/usr/local/share/wordnet")
# lex_filenum -> the topic label. The classifier's topics: concrete, well separated, thousands of glosses each.
CLASSIFIER_TOPICS = {5: "animal", 20: "plant", 13: "food", 6: "artifact", 18: "person", 15: "location"}
# The NLI model's topics, as phrases that read well in the zero-shot template "This example is {}."
NLI_TOPICS = {
    5: "an animal",
    20: "a plant",
    13: "food",
    18: "a person",
    6: "a man-made object",
    15: "a place",
    4: "an act",
    7: "a quality",
    8: "the body",
    9: "a thought",
    10: "communication",
    11: "an event",
    12: "a feeling",
    14: "a group",
    17: "a natural object",
    19: "a natural phenomenon",
    21: "money or property",
    23: "a quantity",
    27: "a substance",
    28: "time",
}


@dataclass(frozen=True)
class Split:
    """Texts with label indices into `labels`: train for fitting, test held out (accuracy, agreement),
    calibration held out too (static quantization), disjoint from each other."""

    labels: list[str]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    calibration: list[tuple[str, int]]


def wordnet_dir() -> Path:
    for d in WORDNET_DIRS:
        if d and (Path(d) / "data.noun").is_file():
            return Path(d)
    raise FileNotFoundError(
        "the full benchmark trains its models on WordNet glosses and found no data.noun in "
        f"{[d for d in WORDNET_DIRS if d]}: install Debian's wordnet-base (`apt-get install wordnet-base`) or set "
        "WORDNET_DIR to a WordNet 3.0 dict directory. `python -m benchmarks --quick` needs no WordNet."
    )


def glosses_by_lexfile() -> dict[int, list[str]]:
    """Every distinct noun gloss (definition and examples, quotes dropped), grouped by lexicographer file."""
    out: dict[int, list[str]] = {}
    seen: set[str] = set()
    with open(wordnet_dir() / "data.noun", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(" ") or "|" not in line:
                continue  # the licence header
            fields, gloss = line.split("|", 1)
            text = " ".join(gloss.replace('"', "").split())
            if len(text.split()) >= 4 and text not in seen:
                seen.add(text)
                out.setdefault(int(fields.split()[1]), []).append(text)
    return out


def pydoc_by_topic(topics: int) -> dict[int, list[str]]:
    """CPython documentation sentences grouped by their topic (the `topics` topics with the most sentences)."""
    from pydoc_data.topics import topics as docs

    from .corpus import sentences_of

    groups = sorted(((name, sentences_of(docs[name])) for name in docs), key=lambda g: (-len(g[1]), g[0]))
    return {i: texts for i, (_, texts) in enumerate(groups[:topics])}


def split(
    groups: dict[int, list[str]], names: dict[int, str], train: int, test: int, calibration: int, seed: int = 0
) -> Split:
    """A balanced split: the same number of texts of every topic in each part, chosen with a fixed seed."""
    rng = random.Random(seed)
    parts: list[list[tuple[str, int]]] = [[], [], []]
    for label, lexfile in enumerate(names):
        texts = sorted(groups[lexfile])
        need = train + test + calibration
        if len(texts) < need:
            raise ValueError(f"topic {names[lexfile]!r} has {len(texts)} texts, fewer than the {need} asked for")
        chosen = rng.sample(texts, need)
        for part, (lo, hi) in zip(parts, ((0, train), (train, train + test), (train + test, need))):
            part += [(t, label) for t in chosen[lo:hi]]
    for part in parts:
        rng.shuffle(part)
    return Split(list(names.values()), *parts)


def classifier_split(quick: bool) -> Split:
    if quick:
        return split(pydoc_by_topic(4), {i: f"docs-{i}" for i in range(4)}, train=24, test=8, calibration=4)
    # 400 held-out texts per topic: 2,400 texts put a 95% lower bound within half a point of a 99.5% agreement
    return split(glosses_by_lexfile(), CLASSIFIER_TOPICS, train=700, test=400, calibration=50)


FORTUNES_DIR = Path(os.environ.get("FORTUNES_DIR", "/usr/share/games/fortunes"))
FORTUNE_TOPICS = ("computers", "food", "love", "politics", "science", "sports")


def fortunes_split(quick: bool, seed: int = 0) -> Split:
    """English fortunes (Debian's `fortunes`) labelled by the file they come from: jokes, quotes and verse, a
    register far from both WordNet's glosses and the export's built-in texts. The files differ in size (147 to
    1,051 entries), so each gives 30% of its entries to the held-out test split and 5% to calibration."""
    if quick:
        return split(pydoc_by_topic(3), {i: f"docs-{i}" for i in range(3)}, train=24, test=8, calibration=4, seed=2)
    if not (FORTUNES_DIR / "computers").exists():
        raise SystemExit(
            f"the full benchmark's second domain is Debian's fortunes and {FORTUNES_DIR} has none: "
            "`apt-get install fortunes` or set FORTUNES_DIR"
        )
    rng = random.Random(seed)
    parts: list[list[tuple[str, int]]] = [[], [], []]
    for label, name in enumerate(FORTUNE_TOPICS):
        text = (FORTUNES_DIR / name).read_text(encoding="utf-8", errors="replace")
        entries = sorted({" ".join(e.split()) for e in text.split("\n%\n")})
        entries = [e for e in entries if 12 <= len(e) <= 400]
        rng.shuffle(entries)
        test, calibration = round(0.3 * len(entries)), round(0.05 * len(entries))
        cuts = ((calibration + test, len(entries)), (0, test), (test, test + calibration))
        for part, (lo, hi) in zip(parts, cuts):
            part += [(t, label) for t in entries[lo:hi]]
    for part in parts:
        rng.shuffle(part)
    return Split(list(FORTUNE_TOPICS), *parts)


def nli_split(quick: bool) -> Split:
    if quick:
        return split(pydoc_by_topic(4), {i: f"docs-{i}" for i in range(4)}, train=24, test=8, calibration=4)
    return split(glosses_by_lexfile(), NLI_TOPICS, train=300, test=20, calibration=5, seed=1)
