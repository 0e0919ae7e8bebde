"""Making model directories: `engine export` (a transformers checkpoint, through torch and transformers' own ONNX
exporter, or optimum's on transformers 4.57: export.py) and `engine adopt` (a ready-made ONNX export, no torch:
adopt.py), both verified through the engine's own run time and quantized by quantize.py. Nothing is imported here,
so `import engine` stays torch-free (tests/test_import.py)."""
