"""`jepa ablate`: train every arm for every seed, then compare the arms with the baseline.

Layout (one ablation folder, each run a normal run directory, so `jepa watch
ABLATION_DIR` can overlay them and `jepa inspect` reads their checkpoints):

    runs/ablate-<profile>-<UTC>/
      manifest.json        profile, arms and their overrides, seeds, the commands, per-run status
      base_config.toml     the profile with the global --set (and --budget-s) applied; arms start from it
      <arm>-s<i>/          run directory of arm <arm> with seed index i (train.seed = base seed + i)
        ...                config.toml, metrics.jsonl, checkpoints/ as for `jepa train`
        batches.txt        "<batch index> <sha256 of the batch>" per training batch drawn
      report.json, report.md

Arms: hand-named ones (`--arm NAME:k=v,...`) and the cross product of `--grid
KEY=V1,V2,...` options, each grid arm named from its values; with a grid, an
LM-only `baseline` arm is added unless an --arm already has that name. The arm
named `baseline` (else the first) is the reference every other arm is compared with.

Fair comparison is checked, not assumed: before anything runs, the settings
that decide the data order, the compute and the evaluation (dataset, vocab,
block and batch size, steps, time budget, eval cadence and coverage, resolved
device and precision, compile, seed) must be equal across arms; and every
training batch is hashed as it is drawn, and each run's shared initial weights
(run_start's `init_digest`), so the report can show that the arms of a seed
started from the same weights and consumed the same batches in the same order:
that pairing is what lets it compare arm and baseline seed by seed (the paired
t-test), and where it does not hold the report falls back to Welch's test. Seed index i sets
`train.seed`, which drives initialisation, data order and pair sampling
together: the spread over seeds is the run-to-run noise a reader should expect.

Arms are compared at equal steps (`train.max_steps`), or with a time budget
(`--budget-s`, i.e. `train.time_budget_s`) at equal seconds of step time; the
report says which.

Runs execute one after another in this process through `train(...)`, or with
`jobs` > 1 that many at once, each in its own process (`jobs`). Ctrl-C
(or a `stop` file) ends the current runs with a checkpoint and stops the
ablation; `--resume` continues it: finished, early-stopped (and diverged) runs are skipped,
an interrupted run resumes exactly from its last checkpoint (with what is left
of its time budget), and a run that died before its first checkpoint is
restarted from scratch. A resumed ablation can also gain arms and seeds.

Reading and reporting (`run_record`, `build_report`) only read files, through
`jepa_core.rundir.summary`. Modules: `plan` (arms, checks, manifest), `run` (and `jobs`),
`report` (numbers, report.json), `markdown` (report.md).
"""

from .markdown import best_lines, comparison_text, data_order_text, fmt_diff, fmt_mean_sd, fmt_metric, fmt_p, fmt_retrieval, init_text, mde_lines, precision_if_shared, report_markdown
from .plan import (
    _ARM_NAME, BASE_CONFIG, BATCH_LOG, MANIFEST, MAX_ARM_NAME, REPORT_JSON, REPORT_MD, SAME_KEYS, AblationPlan, Arm,
    RunSpec, extend_plan, grid_arms, load_plan, parse_arm, parse_grid, plan_ablation, setting_text, value_slug,
)  # fmt: skip
from .report import build_report, read_batch_log, report_paths, run_record, write_report
from .run import AblationCallbacks, batch_digest, remaining_budget, run_ablation
