"""Graph passes of the fp32 graph, each kept by engine/export/pipeline.py only when the logits stay within the fp32
bound: attention fused into one onnxruntime kernel (fuse.py; fuse_exported.py for transformers 5's spelling of
attention), and the last layer run on the head's token only (prune.py)."""
