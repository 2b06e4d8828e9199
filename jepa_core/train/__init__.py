"""Training: `train(cfg, ...)` and the parts it is made of.

    build.py         a run: distributed state, device, data, model, optimizer, resume point
    step.py          train_step: the one step that train, bench and preflight call
    evaluator.py     validation loss / bits per byte and the JEPA probes
    checkpointer.py  checkpoint cadence and write failures
    stops.py         stop conditions, decided collectively under DDP; exit codes
    session.py       the run directory's life: lock, files, run_start / run_end once
    loop.py          train(): the loop that ties them together
    resume.py        --resume auto|PATH
    checkpoint.py    the checkpoint file format (safetensors + JSON), save and load
    optimizer.py  schedule.py  metrics.py  device.py  distributed.py
"""
