"""Training: `train(cfg, ...)` and the parts it is made of (docs/architecture.md, "The packages").

    build.py         a run: distributed state, device, data, model, optimizer, resume point
    step.py          train_step: the one step that train, bench and preflight call
    evaluator.py     validation loss / bits per byte and the JEPA probes
    evalwatch.py     the best eval so far, the overfitting alert, early stopping
    checkpointer.py  checkpoint cadence and write failures
    stops.py         stop conditions, decided collectively under DDP; the signal handlers
                     (the exit codes are in jepa_core/rundir/status.py)
    session.py       the run directory's life: lock, files, run_start / run_end once
    loop.py          train(): the loop that ties them together (its step loop, `_steps`, is a screen)
    resume.py        --resume auto|PATH
    checkpoint.py    the checkpoint file format (safetensors + JSON), save and load
    gradprobe.py     the LM and JEPA gradient norms and cosine on the shared backbone
    phases.py        where a step's time goes (forward, backward, optimizer, teacher), for bench and preflight
    optimizer.py     AdamW and Muon (parameter groups: jepa_core/model/param_groups.py)
    schedule.py      the learning-rate schedule
    allocator.py     glibc malloc settings that keep a step's freed memory (no page faults per step)
    device.py        device and precision: what `auto` picks and why
    metrics.py  distributed.py
"""
