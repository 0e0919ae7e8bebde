"""One forward pass, stage by stage: tokenize -> batch -> session -> postprocess (numpy only)."""
