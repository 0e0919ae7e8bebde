"""Making and checking model directories.

- export.py: `engine export`, a transformers checkpoint (checkpoint.py: load, fp32 ONNX, torch logits).
- adopt.py: `engine adopt`, a ready-made ONNX export, no torch (sources.py: a directory or a Hub repository).
- describe.py: the model's labels, window and NLI ids from its config, the same rules for both.
- pipeline.py: the sequence both run: graph/ fuse -> check fp32 -> quantize/ search -> gate.py confirm -> prune.
- verify.py: the verification texts and bounds; writer.py: the directory, written whole or not at all.
- check.py, recalibrate.py: `engine check`, int8 against the kept fp32 graph on the user's texts.

Nothing is imported here, so `import engine` stays torch-free (tests/test_import.py).
"""
