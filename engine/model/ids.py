"""The ids a served model answers to, from what its directory and manifest say.

- its directory name;
- the Hugging Face id it was exported from (the manifest's `source`) and that id's last part (the hub's legacy
  short form, e.g. `bart-large-mnli`). A source inside a Hugging Face cache snapshot
  (`.../models--org--name/snapshots/REV`) is recovered as `org/name`; any other local path gives no hub id;
- for a directory named after an export alias (`models/distilbert-sst-2`, see scripts/export_models.py --list),
  that alias's hub id;
- Cloudflare's id for an int8 export of distilbert-sst-2.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from engine.model.aliases import CLOUDFLARE_IDS, EXPORT_ALIASES
from engine.model.manifest import ModelInfo


def hub_id(source: str) -> str | None:
    """The Hugging Face id a manifest's source names: the id itself, or the repository of a cache snapshot."""
    if not source:
        return None
    parts = PurePath(source).parts
    for i, part in enumerate(parts):
        if part.startswith("models--") and i + 1 < len(parts) and parts[i + 1] == "snapshots":
            name = part[len("models--") :]
            return name.replace("--", "/", 1) if "--" in name else name
    local = source.startswith(("/", ".", "~")) or "\\" in source or len(parts) > 2 or Path(source).is_dir()
    return None if local else source


def automatic_ids(info: ModelInfo) -> list[str]:
    """Every id of a model directory, most specific first (its directory name)."""
    ids = [info.path.name]
    hub = hub_id(info.source) or EXPORT_ALIASES.get(info.path.name)
    if hub:
        ids += [hub, hub.rsplit("/", 1)[-1]]
    ids += [cf for cf, (cf_hub, precision) in CLOUDFLARE_IDS.items() if (cf_hub, precision) == (hub, info.precision)]
    return list(dict.fromkeys(ids))
