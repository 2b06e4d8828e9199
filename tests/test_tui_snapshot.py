"""Text snapshots of the dashboard at 80x24 (compact) and 160x48 (large).

The screen is rendered headless to plain text (colours are not compared) and
checked against tests/snapshots/*.txt. After an intended change to the
layout, regenerate with `JEPA_UPDATE_SNAPSHOTS=1 pytest tests/test_tui_snapshot.py`
and review the diff. The runs are synthetic and deterministic (fixed
timestamps, seeded noise, a fixed clock); elapsed/ETA are masked anyway so a
snapshot never depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest

from jepa_cli.tui.app import Dashboard, screen_text
from jepa_cli.tui.fakerun import T0, write_fake_run

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("JEPA_UPDATE_SNAPSHOTS", "") not in ("", "0")


def _mask(text: str) -> str:
    text = re.sub(r"(elapsed|ETA) [0-9:–]+", lambda m: m.group(1) + " ##", text)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def _render(run_dirs, size) -> str:
    async def go() -> str:
        app = Dashboard(run_dirs, poll_interval=0.05, clock=lambda: T0 + 3600)
        async with app.run_test(size=size) as pilot:
            # wait until the whole file is read and logged, then for two more polls,
            # so the snapshot never catches a half-filled log pane (its scrollbar)
            for _ in range(200):
                await pilot.pause(0.05)
                if not app.runset.behind:
                    break
            await pilot.pause(0.3)
            return screen_text(app)

    return _mask(asyncio.run(go()))


def _check(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"no snapshot {path}; create it with JEPA_UPDATE_SNAPSHOTS=1")
        path.write_text(text)
        return
    expected = path.read_text()
    if text != expected:
        import difflib

        diff = "\n".join(difflib.unified_diff(expected.splitlines(), text.splitlines(), "snapshot", "now", lineterm=""))
        pytest.fail(f"{name} differs from the snapshot (JEPA_UPDATE_SNAPSHOTS=1 to accept):\n{diff}")


@pytest.fixture
def tiny_run(tmp_path):
    return write_fake_run(tmp_path / "tiny-20251125-101500", steps=600)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_single_run_snapshot(tiny_run, size):
    text = _render([tiny_run], size)
    for word in ("loss", "JEPA terms", "latent std", "grad norm · LR", "FINISHED", "step 600/600", "●"):
        assert word in text  # ●: the eval points of the val loss
    # the JEPA terms in words a reader recognises, whole at either size
    assert "━variance " in text and "━covariance " in text
    if size[0] >= 120:  # the large layout adds the schedule and retrieval charts and the eval table
        for word in ("EMA · loss weights", "jepa_w→ 0.5", "grads", "cos→", "retrieval top-1", "lift vs copy h2", "chance-norm h2"):
            assert word in text
    _check(f"dashboard_{size[0]}x{size[1]}.txt", text)


def test_ablation_with_alert_snapshot(tmp_path):
    a = write_fake_run(tmp_path / "abl" / "jepa-seed0", steps=300, seed=1)
    b = write_fake_run(tmp_path / "abl" / "baseline-seed0", steps=300, seed=2, baseline=True, finished=False)
    with open(a / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"type": "event", "step": 300, "time": T0 + 61, "event": "alert", "kind": "collapse", "message": "std_anchor 0.004 < floor 0.01 at step 300"}) + "\n")
    text = _render([a, b], (80, 24))
    # runs are labelled by what differs between them (run_baseline), not by their folder names
    assert "collapse" in text and "⚠ 1 alert" in text and "● jepa " in text and "● baseline " in text
    _check("dashboard_ablation_80x24.txt", text)
