"""A loaded model: verified files + tokenizer + session, and the batched forward pass both tasks share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import batching, model_files
from .errors import InvalidRequestError
from .manifest import ModelInfo
from .session import OnnxSession
from .tokenize import Encoded, TextTokenizer


@dataclass(frozen=True)
class LoadedModel:
    info: ModelInfo
    tokenizer: TextTokenizer
    session: OnnxSession
    batch_tokens: int
    manifest_sha256: str = ""  # identifies the export (scoring jobs record it)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        threads: int | None = None,
        batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
        verify: bool = True,
    ) -> LoadedModel:
        if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
            raise InvalidRequestError(f"batch_tokens must be a positive integer, got {batch_tokens!r}")
        files = model_files.load(path, verify=verify)
        info = files.info
        tokenizer = TextTokenizer(files.tokenizer_json, info.max_length, info.pad_id)
        session = OnnxSession(files.onnx_path, info.num_labels, threads)
        files.check_unchanged()
        return cls(info, tokenizer, session, batch_tokens, files.manifest_sha256)

    def logits(self, encoded: Sequence[Encoded]) -> np.ndarray:
        """Raw logits (len(encoded), num_labels) in input order, computed in length-sorted token-budget batches."""
        out = np.empty((len(encoded), self.info.num_labels), dtype=np.float32)
        for batch in batching.batches(encoded, self.info.pad_id, self.batch_tokens, self.info.pooled_token_id):
            out[batch.index] = self.session.run(batch)
        return out
