"""The training loop and what it writes: run directory, metrics, checkpoints.

`train(cfg, ...)` is the one entry point; everything else here is a part it
uses and that readers (inspect, dashboard, ablate) may reuse without training.
"""
