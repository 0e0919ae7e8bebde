"""engine.runtime.tokenization: one Tokenizer per model, whatever the truncation settings requests ask for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from engine.runtime.tokenization import Side, Strategy, TextTokenizer, Truncation

LONG = " ".join(["the plot felt slow but the actors were great"] * 30)  # far over the 64-token window
SETTINGS = [
    Truncation(True, Side.RIGHT, Strategy.LONGEST_FIRST),
    Truncation(True, Side.LEFT, Strategy.LONGEST_FIRST),
    Truncation(True, Side.RIGHT, Strategy.ONLY_FIRST),
    Truncation(False, Side.RIGHT, Strategy.LONGEST_FIRST),
]


@pytest.fixture
def tokenizer_json(exported: Any) -> str:
    return (Path(exported("bert", "fp32")) / "tokenizer.json").read_text()


def fresh(tokenizer_json: str, trunc: Truncation, max_length: int) -> Tokenizer:
    """What a tokenizer set once for `trunc` gives: the reference for the shared, re-set one."""
    tok = Tokenizer.from_str(tokenizer_json)
    tok.no_padding()
    tok.no_truncation()
    if trunc.enabled:
        tok.enable_truncation(max_length, stride=0, strategy=trunc.strategy.value, direction=trunc.side.value)
    return tok


def test_switching_truncation_settings_matches_a_tokenizer_set_once(tokenizer_json: str) -> None:
    shared = TextTokenizer(tokenizer_json, 64, 0)
    for trunc in SETTINGS + SETTINGS[::-1]:  # every change of setting, both ways
        with shared._using(trunc) as tok:
            got = tok.encode_batch([LONG, "short text", (LONG, "This example is food.")])
        want = fresh(tokenizer_json, trunc, 64).encode_batch([LONG, "short text", (LONG, "This example is food.")])
        assert [e.ids for e in got] == [e.ids for e in want]
        assert (len(got[0].ids) == 64) is trunc.enabled  # the long text really is cut, or not


def test_one_tokenizer_instance_serves_every_setting(tokenizer_json: str) -> None:
    """A second Tokenizer per truncation setting held a second copy of the vocabulary."""
    shared = TextTokenizer(tokenizer_json, 64, 0)
    seen = set()
    for trunc in SETTINGS:
        assert len(shared.encode(["a short text"], trunc)) == 1
        with shared._using(trunc) as tok:
            seen.add(id(tok))
    assert len(seen) == 1
