"""Rebuild engine/export/verification_texts.txt: the built-in calibration and verification texts of `engine export`.

    python scripts/build_verification_texts.py [--output engine/export/verification_texts.txt]

Several domains and registers, all from text a Debian machine has offline (licenses in the file's header):
- written for this project (reviews, short social posts, customer questions, news, finance; a few languages):
  scripts/verification_texts_own.txt, kept verbatim;
- German, Spanish, Italian and Russian fortunes (Debian fortunes-de, fortunes-es, fortunes-it, fortunes-ru):
  quotes, jokes, proverbs, dialogue; short, informal;
- translated man pages (Debian's apt, dpkg, passwd, procps, ...: /usr/share/man/<lang>/): technical prose in
  German, French, Spanish, Italian, Dutch, Polish, Portuguese, Russian, Swedish and Japanese;
- CPython's documentation (pydoc_data.topics of this Python, PSF license): technical English.

Deliberately left out: WordNet glosses and English fortunes, the domains of the benchmark's trained models
(benchmarks/labelled.py), so `python -m benchmarks` measures the default export on domains it never saw.
Sampling is seeded: the same machine packages give the same file.
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN = ROOT / "scripts" / "verification_texts_own.txt"
FORTUNES = Path("/usr/share/games/fortunes")
FORTUNE_LANGS = {"de": 180, "es": 150, "it": 150, "ru": 150}
MAN_LANGS = {"de": 90, "fr": 90, "es": 50, "it": 60, "nl": 60, "pl": 60, "pt": 60, "ru": 70, "sv": 60, "ja": 50}
PYDOC = 600
MIN_CHARS, MAX_CHARS = 12, 300


def clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def usable(text: str) -> bool:
    letters = sum(ch.isalpha() for ch in text)
    return MIN_CHARS <= len(text) <= MAX_CHARS and letters >= 0.6 * len(text.replace(" ", ""))


def fortunes(lang: str) -> list[str]:
    out = []
    for path in sorted((FORTUNES / lang).glob("*")):
        if path.suffix in (".dat", ".u8") or not path.is_file():
            continue
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        for entry in text.split("\n%\n"):
            lines = [ln for ln in entry.splitlines() if not re.match(r"^\s*(--|―|—)", ln)]  # drop attributions
            body = clean(" ".join(lines))
            if usable(body):
                out.append(body)
    return out


def sentences(text: str) -> list[str]:
    return [clean(s) for s in re.split(r"(?<=[.!?。])\s+", text)]


def man_page_text(path: Path) -> str:
    """The page's paragraphs as plain text (man renders it; col strips the overstrikes)."""
    page = subprocess.run(
        ["man", "-E", "UTF-8", "-l", str(path)],
        capture_output=True,
        env={"MANWIDTH": "200", "MAN_KEEP_FORMATTING": "0", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        timeout=60,
    ).stdout
    plain = subprocess.run(["col", "-bx"], input=page, capture_output=True).stdout.decode("utf-8", "replace")
    paragraphs, current = [], []
    for line in plain.splitlines():
        if line.startswith("       ") and not line.strip().startswith("-"):
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return "\n".join(paragraphs)


def man_pages(lang: str, rng: random.Random, want: int) -> list[str]:
    files = sorted(Path("/usr/share/man", lang).glob("man*/*.gz"))
    rng.shuffle(files)
    out: list[str] = []
    for path in files[:40]:
        try:
            with gzip.open(path) as f:
                f.read(1)
            text = man_page_text(path)
        except (OSError, subprocess.SubprocessError):
            continue
        found = [s for s in sentences(text) if (usable(s) and len(s.split()) >= 4) or (lang == "ja" and usable(s))]
        out += rng.sample(found, min(len(found), max(2, want // 15)))
    return out


def pydoc() -> list[str]:
    from pydoc_data.topics import topics

    out = []
    for name in sorted(topics):
        for paragraph in topics[name].split("\n\n"):
            if paragraph.startswith(" ") or "::" in paragraph:
                continue  # code and grammar blocks
            out += [s for s in sentences(paragraph) if usable(s) and 8 <= len(s.split()) <= 60]
    return out


def take(rng: random.Random, texts: list[str], n: int, seen: set[str]) -> list[str]:
    pool = [t for t in dict.fromkeys(texts) if t not in seen]
    picked = rng.sample(pool, min(n, len(pool)))
    seen.update(picked)
    return picked


HEADER = """\
# Calibration and verification texts of `engine export` and `engine adopt --requantize` (one per line).
# Built by scripts/build_verification_texts.py; its docstring says what each part is. The int8 gate splits them
# (engine/export/gate.py): the recipe search and its calibrated scales see ~40%, the rest confirms the result.
# Sources and licenses:
# - lines written for this project (reviews, social posts, questions, news, finance, several languages): the
#   project's license;
# - Debian fortunes-de, fortunes-es (GPL-2+; quotes presumed public domain), fortunes-it (public domain),
#   fortunes-ru (GPL-2);
# - sentences of translated man pages shipped by Debian's apt, dpkg, dpkg-dev, passwd, procps, xz-utils, man-db,
#   login, net-tools, ... (each package's license, GPL-2+ for most);
# - sentences of the CPython documentation (pydoc_data.topics, PSF license).
# Left out on purpose: WordNet glosses and English fortunes, the benchmark models' domains.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "engine" / "export" / "verification_texts.txt")
    args = parser.parse_args()
    rng = random.Random(29)
    seen: set[str] = set()
    parts: list[tuple[str, list[str]]] = []
    own = [clean(t) for t in OWN.read_text(encoding="utf-8").splitlines() if t.strip() and not t.startswith("#")]
    parts.append(("own", take(rng, own, len(own), seen)))
    for lang, n in FORTUNE_LANGS.items():
        parts.append((f"fortunes-{lang}", take(rng, fortunes(lang), n, seen)))
    for lang, n in MAN_LANGS.items():
        parts.append((f"man-{lang}", take(rng, man_pages(lang, rng, n), n, seen)))
    parts.append(("pydoc", take(rng, pydoc(), PYDOC, seen)))
    lines = [HEADER.rstrip("\n")]
    for name, texts in parts:
        lines.append(f"# {name}: {len(texts)}")
        lines += texts
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    total = sum(len(t) for _, t in parts)
    print(f"wrote {args.output}: {total} texts, {args.output.stat().st_size} bytes")
    for name, texts in parts:
        print(f"  {name}: {len(texts)}")


if __name__ == "__main__":
    main()
