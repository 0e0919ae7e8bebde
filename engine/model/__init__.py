"""A model directory on disk: the manifest, its files and their checks. No onnxruntime session here."""
