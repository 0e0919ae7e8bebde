"""The ids a served model answers to: directory name, Hub id (also from a cache snapshot), export alias, Cloudflare."""

from __future__ import annotations

from pathlib import Path

from engine.export import export as export_models
from engine.model.ids import CLOUDFLARE_IDS, EXPORT_ALIASES, automatic_ids, hub_id
from engine.model.manifest import ModelInfo

SST2 = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
CF = "@cf/huggingface/distilbert-sst-2-int8"


def info(directory: str, source: str, precision: str = "fp32") -> ModelInfo:
    return ModelInfo(Path("/models") / directory, "text-classification", "bert", ("a", "b"), None, 512, 0, precision,
                     source=source)  # fmt: skip


def test_hub_source() -> None:
    assert automatic_ids(info("sst2", SST2)) == ["sst2", SST2, SST2.rsplit("/", 1)[1]]


def test_cache_snapshot_source_is_its_hub_id() -> None:
    snapshot = f"/home/u/.cache/huggingface/hub/models--{SST2.replace('/', '--')}/snapshots/0123abcd"
    assert hub_id(snapshot) == SST2
    assert hub_id("/home/u/.cache/huggingface/hub/models--gpt2/snapshots/abc") == "gpt2"
    ids = automatic_ids(info("my-model", snapshot, "int8"))
    assert ids == ["my-model", SST2, SST2.rsplit("/", 1)[1], CF]


def test_local_source_gives_no_hub_id() -> None:
    for source in ("/data/checkpoints/bert", "./ckpt", "~/ckpt", "a/b/c", ""):
        assert hub_id(source) is None, source
    assert automatic_ids(info("my-model", "/data/checkpoints/bert")) == ["my-model"]


def test_directory_named_after_an_export_alias() -> None:
    ids = automatic_ids(info("distilbert-sst-2", "/data/checkpoints/sst2", "int8"))
    assert ids == ["distilbert-sst-2", SST2, SST2.rsplit("/", 1)[1], CF]
    assert automatic_ids(info("bart-large-mnli", "/tmp/x")) == ["bart-large-mnli", "facebook/bart-large-mnli"]


def test_alias_tables_agree_with_the_export_script() -> None:
    hub_aliases = {k: a.hub_id for k, a in export_models.ALIASES.items() if not k.startswith("@cf/")}
    assert hub_aliases == EXPORT_ALIASES
    cloudflare = {k: (a.hub_id, a.precision) for k, a in export_models.ALIASES.items() if k.startswith("@cf/")}
    assert cloudflare == CLOUDFLARE_IDS
