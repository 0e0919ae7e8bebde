"""The one table of model names: export aliases and Cloudflare ids, each to the Hugging Face id it stands for.

`engine export`, `engine serve`'s ids and models by name (engine.model.resolve) all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Alias:
    hub_id: str
    pairs: bool = False  # cross-encoders and NLI models score text pairs
    precision: str | None = None  # forced precision (Cloudflare ids name one)


ALIASES: dict[str, Alias] = {
    "distilbert-sst-2": Alias("distilbert/distilbert-base-uncased-finetuned-sst-2-english"),
    "finbert": Alias("ProsusAI/finbert"),
    "twitter-roberta-sentiment": Alias("cardiffnlp/twitter-roberta-base-sentiment-latest"),
    "xlm-roberta-langdetect": Alias("papluca/xlm-roberta-base-language-detection"),
    "mxbai-rerank-base": Alias("mixedbread-ai/mxbai-rerank-base-v1", pairs=True),
    "bart-large-mnli": Alias("facebook/bart-large-mnli", pairs=True),
    "mdeberta-xnli": Alias("MoritzLaurer/mDeBERTa-v3-base-xnli-multilingual-nli-2mil7", pairs=True),
    "@cf/huggingface/distilbert-sst-2-int8": Alias(
        "distilbert/distilbert-base-uncased-finetuned-sst-2-english", precision="int8"
    ),
}
EXPORT_ALIASES = {name: a.hub_id for name, a in ALIASES.items() if not name.startswith("@")}
CLOUDFLARE_IDS = {name: (a.hub_id, a.precision or "int8") for name, a in ALIASES.items() if name.startswith("@")}
