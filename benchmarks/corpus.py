"""The benchmark corpus: real English that nobody on this project wrote, with SST-2-like lengths.

Sentences of CPython's own documentation (pydoc_data.topics, shipped with every Python install, PSF license),
10 to 60 words each, a fixed seeded selection, so every run and every system scores the same texts.
"""

from __future__ import annotations

import random
import re

MIN_WORDS = 10
MAX_WORDS = 60
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def sentences_of(text: str) -> list[str]:
    """The distinct prose sentences of one documentation topic with 10-60 words (code and tables dropped)."""
    seen: set[str] = set()
    out = []
    for para in text.split("\n\n"):
        if para.startswith((" ", "\t", ">>>")) or "|" in para or "***" in para or "===" in para:
            continue  # code samples, tables, grammar rules
        for sentence in _SENTENCE_END.split(" ".join(para.split())):
            words = sentence.split()
            if MIN_WORDS <= len(words) <= MAX_WORDS and sentence not in seen and sentence[-1] in ".!?":
                seen.add(sentence)
                out.append(sentence)
    return out


def all_sentences() -> list[str]:
    """Every distinct prose sentence of the documentation topics with 10-60 words."""
    from pydoc_data.topics import topics

    seen: set[str] = set()
    out = []
    for name in sorted(topics):
        for sentence in sentences_of(topics[name]):
            if sentence not in seen:
                seen.add(sentence)
                out.append(sentence)
    return out


def sample(n: int, seed: int = 0) -> list[str]:
    """n sentences chosen with a fixed seed, in a shuffled (not length-sorted) order, as requests arrive."""
    sentences = all_sentences()
    if n > len(sentences):
        raise ValueError(f"the corpus has {len(sentences)} sentences, fewer than the {n} asked for")
    return random.Random(seed).sample(sentences, n)
