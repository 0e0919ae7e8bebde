"""Making model directories: `engine export` (a transformers checkpoint, through torch and optimum: export.py) and
`engine adopt` (a ready-made ONNX export, no torch: adopt.py), both verified through the engine's own run time and
quantized by quantize.py. Nothing is imported here, so `import engine` stays torch-free (tests/test_import.py)."""
