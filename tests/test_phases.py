"""Where a step's time goes: train_step's phase boundaries, the notes an unusual split gets,
and the phases in bench's report."""

from __future__ import annotations

import pytest
import torch

from jepa_core.config import load_config
from jepa_core.train.phases import PHASES, PhaseClock, phase_notes, phase_shares
from jepa_core.train.step import build_trainee, plan_step, train_step

SMALL = [
    "train.compile=false",
    "model.d_model=32",
    "model.n_layers=2",
    "model.n_heads=2",
    "model.tap_layer=-1",
    "train.batch_size=2",
    "data.block_size=16",
    "data.vocab_size=300",
    "jepa.latent_dim=8",
    "jepa.horizons=[2]",
    "jepa.horizon_probs=[1.0]",
]
CPU = torch.device("cpu")


class RecordingClock:
    """Records the clock calls train_step makes, interleaved with what the step really does."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def start(self) -> None:
        self.log.append("start")

    def lap(self, phase: str) -> None:
        self.log.append(f"lap:{phase}")

    def end_step(self) -> None:
        self.log.append("end")


@pytest.mark.parametrize("accum", [1, 2])
def test_each_phase_lap_closes_the_work_it_is_named_for(accum):
    cfg = load_config("tiny", SMALL + [f"train.grad_accum_steps={accum}"])
    tr = build_trainee(cfg, 300, CPU, plan_step(cfg, CPU, "fp32"), seed=0)
    log: list[str] = []
    real_fwd, real_step, real_teacher = tr.fwd.forward, tr.optimizer.step, tr.model.update_teacher

    def fwd(*a, **k):
        log.append("forward")
        out = real_fwd(*a, **k)
        out.loss.register_hook(lambda g: log.append("backward") or g)
        return out

    tr.fwd.forward = fwd
    tr.optimizer.step = lambda: (log.append("optimizer"), real_step())[1]
    tr.model.update_teacher = lambda m: (log.append("teacher"), real_teacher(m))[1]
    x = torch.randint(0, 300, (2, 16))
    train_step(tr, lambda: (x, x), 1, 10, clock=RecordingClock(log))
    micro = ["start", "forward", "lap:forward", "backward", "lap:backward"]
    assert log == micro * accum + ["optimizer", "lap:optimizer", "teacher", "lap:teacher", "end"]


def test_phase_clock_averages_over_steps(monkeypatch):
    ticks = iter([0.0, 0.010, 0.030, 0.031, 0.032, 1.0, 1.002, 1.006, 1.008, 1.010])  # seconds
    clock = PhaseClock(CPU)
    monkeypatch.setattr(clock, "_now", lambda: next(ticks))
    for _ in range(2):
        clock.start()
        for phase in PHASES:
            clock.lap(phase)
        clock.end_step()
    ms = clock.per_step()
    assert ms == pytest.approx({"forward": 6.0, "backward": 12.0, "optimizer": 1.5, "teacher": 1.5})
    assert phase_shares(ms) == pytest.approx({"forward": 6 / 21, "backward": 12 / 21, "optimizer": 1.5 / 21, "teacher": 1.5 / 21})


HEALTHY = {"forward": 40.0, "backward": 50.0, "optimizer": 8.0, "teacher": 2.0}
SLOW_OPT = {"forward": 20.0, "backward": 30.0, "optimizer": 74.0, "teacher": 1.0}
AVX2 = frozenset({"avx", "avx2", "fma"})


def _cfg(*sets):
    return load_config("tiny", SMALL + list(sets))


def test_no_note_for_a_healthy_split():
    assert phase_notes(HEALTHY, _cfg("optim.optimizer=muon"), CPU) == []


def test_bf16_newton_schulz_on_a_cpu_without_bf16_names_the_fix(monkeypatch):
    import jepa_core.train.device as device

    monkeypatch.setattr(device, "cpu_flags", lambda: AVX2)
    (note,) = phase_notes(SLOW_OPT, _cfg("optim.optimizer=muon", "optim.muon_ns_dtype=bf16"), CPU)
    assert note.startswith("the optimizer is 59% of the step") and "bf16" in note
    assert "--set optim.muon_ns_dtype=auto" in note
    # the same split with fp32 Newton-Schulz: the iterations themselves, a different fix
    (note,) = phase_notes(SLOW_OPT, _cfg("optim.optimizer=muon", "optim.muon_ns_dtype=fp32"), CPU)
    assert "Newton-Schulz iterations" in note and "train.batch_size" in note and "muon_ns_dtype" not in note


def test_adamw_and_teacher_notes():
    (note,) = phase_notes(SLOW_OPT, _cfg("optim.optimizer=adamw"), CPU)
    assert "AdamW" in note
    heavy_teacher = {"forward": 30.0, "backward": 40.0, "optimizer": 5.0, "teacher": 25.0}
    (note,) = phase_notes(heavy_teacher, _cfg("jepa.teacher=encoder"), CPU)
    assert "encoder teacher" in note and "--set jepa.teacher=projector" in note
    assert phase_notes(heavy_teacher, _cfg("jepa.run_baseline=true"), CPU) == []


def test_a_step_is_the_same_with_and_without_a_clock():
    """The clock only reads time: parameters after two clocked steps equal those after two plain ones."""
    cfg = _cfg()
    a = build_trainee(cfg, 300, CPU, plan_step(cfg, CPU, "fp32"), seed=0)
    b = build_trainee(cfg, 300, CPU, plan_step(cfg, CPU, "fp32"), seed=0)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 300, (2, 17), generator=g) for _ in range(2)]
    for i, t in enumerate(batches):
        torch.manual_seed(i)  # pair sampling draws from the global generator
        train_step(a, lambda t=t: (t[:, :-1], t[:, 1:]), i + 1, 10, clock=PhaseClock(CPU))
        torch.manual_seed(i)
        train_step(b, lambda t=t: (t[:, :-1], t[:, 1:]), i + 1, 10)
    for (n, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(p, q), n
