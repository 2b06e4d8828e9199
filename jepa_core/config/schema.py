"""The profile schema: one validated pydantic model per TOML section, the cross-field rules, and the
field properties (bounds, resume-safe, same across arms) that the key lists are derived from.

A profile is a TOML file with the tables `model`, `jepa`, `data`, `optim`,
`train` and `log`, plus top-level `description` and `extends`. Loading merges
`extends` bases (deepest first), applies `--set section.key=value` overrides,
and validates strictly: unknown keys (with a did-you-mean), wrong types,
out-of-range values and cross-field rules all raise `ConfigError` naming the
file and the dotted key. `save_config` writes the resolved profile with
tomli-w; `load_config` of that file gives back an equal `Config`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SECTIONS = ("model", "jepa", "data", "optim", "train", "log")
TOP_LEVEL_KEYS = ("name", "description", "extends")

# Upper bounds of counts (pydantic `le=`). Without them a slip such as
# --set train.max_steps=1000000000000000000000000000000 validates and lands in config.toml,
# as an integer no 64-bit reader (TOML, numpy, torch) can hold, meaning nothing a run can do.
MAX_STEPS = 10**12  # steps (and evals, checkpoints, log lines): 30 years at 1000 steps a second
MAX_TOKENS = 10**15  # tokens or bytes: over 30 times the largest text corpora
MAX_SECONDS = 1e9  # 30 years
MAX_BATCH = 1 << 20  # sequences per micro-batch, micro-batches per step
# the init seed is torch.manual_seed(seed * 1_000_003 + rank + 1), which must stay below 2**64
MAX_SEED = 1 << 40
_BOUND_WHY = {
    MAX_STEPS: "about 30 years at 1000 steps a second",
    MAX_TOKENS: "over 30 times the largest text corpora",
    MAX_SECONDS: "about 30 years",
    MAX_BATCH: "more than any device holds",
    MAX_SEED: "2**40: scaled by about a million for torch.manual_seed, it must still fit in 64 bits",
}


# Field properties, declared where a key is defined so that no list of keys can forget a new one:
# RESUME_SAFE keys may change when a run resumes (cadence, bookkeeping, where output goes: nothing
# that changes the model or its data stream); SAME_ACROSS_ARMS keys decide the data order, the
# compute and the evaluation, so every arm of an ablation must share them. `keys_with` reads them.
RESUME_SAFE = {"resume_safe": True}
SAME_ACROSS_ARMS = {"same_across_arms": True}
BOTH = {**RESUME_SAFE, **SAME_ACROSS_ARMS}


class _Section(BaseModel):
    # strict: a string is never coerced to a number; ints are accepted for floats.
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class ModelConfig(_Section):
    d_model: int = Field(128, ge=8, le=16384, description="Width of the residual stream.")
    n_layers: int = Field(4, ge=1, le=256, description="Number of transformer blocks.")
    n_heads: int = Field(4, ge=1, le=256, description="Attention heads; d_model / n_heads must be even (RoPE).")
    ff_multiplier: float = Field(
        8 / 3, gt=0, le=16, description="SwiGLU inner size = ff_multiplier * d_model, rounded up to ff_round."
    )
    ff_round: int = Field(64, ge=1, le=1024, description="Round the SwiGLU inner size up to a multiple of this.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in attention output, MLP and lm_bridge.")
    rope_base: float = Field(10000.0, gt=1, description="RoPE frequency base.")
    norm_eps: float = Field(1e-5, gt=0, lt=1, description="RMSNorm epsilon.")
    init_std: float = Field(0.02, gt=0, lt=1, description="Std of weight init; residual projections are scaled by 1/sqrt(2*n_layers).")
    tap_layer: int = Field(-2, description="Block whose output feeds the JEPA heads; negative counts from the top.")
    tap_norm: bool = Field(True, description="Apply an RMSNorm to the tap activation the JEPA heads read.")
    grad_barrier: bool = Field(
        False, description="Detach the tap for the layers above it: blocks 0..tap learn from the JEPA loss only."
    )
    weight_tying: bool = Field(True, description="Tie the LM head to the token embedding (with learnable logit scale and bias).")
    logit_bias: bool = Field(
        True, description="A learnable per-token bias on the logits (out_bias); false keeps the head bias-free, as Llama's (`jepa export`)."
    )
    lm_bridge: bool = Field(
        True,
        description="JEPA arms: the layers above the tap read it through the gated residual lm_bridge; false passes it straight up (a plain stack, as Llama's).",
    )

    @property
    def tap_index(self) -> int:
        """The tap as a block index: `tap_layer`, counted from the end when negative."""
        return self.tap_layer if self.tap_layer >= 0 else self.n_layers + self.tap_layer


class JepaConfig(_Section):
    run_baseline: bool = Field(False, description="LM-only baseline: no tap, no bridge, no JEPA parameters, lm_weight 1.")
    teacher: Literal["projector", "encoder"] = Field(
        "projector", description="EMA teacher: 'projector' (EMA of online_proj) or 'encoder' (EMA of the stack up to the tap)."
    )
    latent_dim: int = Field(128, ge=2, le=16384, description="Size of the JEPA latent z.")
    hidden_mult: int = Field(2, ge=1, le=16, description="Projector/predictor hidden size = hidden_mult * latent_dim.")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout inside the projector and predictor MLPs.")
    horizons: list[int] = Field([2, 8, 32], min_length=1, description="Prediction horizons k (tokens ahead).")
    horizon_probs: list[float] = Field([0.5, 0.3, 0.2], min_length=1, description="Sampling probability of each horizon; sums to 1.")
    pairs_per_seq: int = Field(8, ge=1, le=4096, description="Anchor/target pairs sampled per sequence.")
    tau: float = Field(0.1, gt=0, le=10, description="InfoNCE temperature.")
    negatives: Literal["distant", "all", "other_sequences"] = Field(
        "distant",
        description="InfoNCE negatives among the pairs of the same horizon: 'distant' drops same-sequence pairs "
        "whose target is closer than k to the positive's target, 'all' keeps every pair, "
        "'other_sequences' drops every same-sequence pair.",
    )
    gamma_var: float = Field(1.0, ge=0, description="Weight of the VICReg variance term on anchors.")
    gamma_cov: float = Field(0.04, ge=0, description="Weight of the VICReg covariance term on anchors.")
    gamma_var_pred: float = Field(0.0, ge=0, description="Weight of the variance term on predictions.")
    gamma_cov_pred: float = Field(0.0, ge=0, description="Weight of the covariance term on predictions.")
    ema_momentum: float = Field(0.996, ge=0, le=1, description="Teacher EMA momentum (m0 with a cosine schedule).")
    ema_schedule: Literal["constant", "cosine"] = Field("constant", description="EMA momentum schedule.")
    ema_momentum_final: float = Field(0.9995, ge=0, le=1, description="m1: momentum at the end of the cosine schedule.")
    ema_schedule_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Length S of the cosine EMA schedule; 0 means train.max_steps.")
    jepa_weight: float = Field(1.0, ge=0, description="Weight of the JEPA loss in the total loss (its starting value when annealed).")
    jepa_weight_schedule: Literal["constant", "anneal"] = Field(
        "constant", description="'anneal' takes the JEPA weight linearly from jepa_weight to 0 over the last jepa_weight_anneal_frac of training."
    )
    jepa_weight_anneal_frac: float = Field(
        0.3, gt=0, le=1, description="Fraction of train.max_steps, at the end, over which an annealed JEPA weight falls to 0 (reached at max_steps)."
    )
    lm_weight: float = Field(1.0, ge=0, description="Weight of the LM loss (its final value when scheduled).")
    lm_weight_use_scheduler: bool = Field(False, description="Ramp the LM weight: 0 until lm_warmup_steps, then linear.")
    lm_warmup_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Steps with LM weight 0 when scheduled.")
    lm_ramp_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Step at which the LM weight reaches lm_weight; 0 means max_steps.")
    eval_pairs: int = Field(
        1024, ge=8, le=MAX_TOKENS, description="At least this many fixed anchor/target pairs (over as many validation blocks as needed) for the retrieval eval.",
        json_schema_extra=SAME_ACROSS_ARMS,
    )
    alert_std_floor: float = Field(0.01, ge=0, description="Collapse alert when std_anchor falls under this.")
    alert_rank_floor: float = Field(2.0, ge=0, description="Collapse alert when the effective rank falls under this.")


class DataConfig(_Section):
    dataset: str = Field(
        "tiny_shakespeare",
        min_length=1,
        description="Dataset alias (see `jepa data list`), text:PATH, hf:OWNER/NAME[:CONFIG], json:PATH or parquet:PATH (a file, folder or glob).",
        json_schema_extra=SAME_ACROSS_ARMS,
    )
    vocab_size: int = Field(1024, ge=260, le=1_000_000, description="BPE vocabulary size to train.", json_schema_extra=SAME_ACROSS_ARMS)
    lowercase: bool = Field(False, description="Lowercase the text before tokenizing.", json_schema_extra=SAME_ACROSS_ARMS)
    block_size: int = Field(128, ge=8, le=1_048_576, description="Tokens per training sequence.", json_schema_extra=SAME_ACROSS_ARMS)
    train_fraction: float = Field(1.0, gt=0, le=1, description="Use this prefix fraction of the train tokens.", json_schema_extra=SAME_ACROSS_ARMS)
    val_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Held out for validation when the dataset has no val split: the tail of a text stream, "
        "or every 1/val_fraction-th document of hf:/json:/parquet: data.",
        json_schema_extra=SAME_ACROSS_ARMS,
    )
    text_field: str = Field("text", min_length=1, description="hf:/json:/parquet: the column that holds each document's text.", json_schema_extra=SAME_ACROSS_ARMS)
    train_split: str = Field("train", min_length=1, description="hf:/json:/parquet: the split to train on.", json_schema_extra=SAME_ACROSS_ARMS)
    val_split: str = Field(
        "auto",
        min_length=1,
        description="hf:/json:/parquet: the validation split's name; 'auto' takes `validation` when the dataset has it, "
        "else holds out val_fraction of the train documents; 'heldout' always holds out.",
        json_schema_extra=SAME_ACROSS_ARMS,
    )
    max_train_tokens: int = Field(0, ge=0, le=MAX_TOKENS, description="Stop tokenizing (hf:/json:/parquet:) or truncate (aliases, text:) the train split at this many tokens; 0: all.", json_schema_extra=SAME_ACROSS_ARMS)
    tokenizer_sample_bytes: int = Field(
        100_000_000, ge=1_000_000, le=MAX_TOKENS, description="Train the BPE tokenizer on at most this many bytes of the train text (its first documents).",
        json_schema_extra=SAME_ACROSS_ARMS,
    )
    val_text: str = Field(
        "",
        description="text: datasets: a .txt file or folder whose whole text is the validation split (the train split is then "
        "all of data.dataset), e.g. to train on one corpus and evaluate on another; empty: the tail val_fraction.",
        json_schema_extra=SAME_ACROSS_ARMS,
    )
    tokenizer: str = Field("", description="Reuse this tokenizer.json (or a run directory's) instead of training one; vocab_size is then ignored.", json_schema_extra=SAME_ACROSS_ARMS)


class OptimConfig(_Section):
    # 0 is allowed: a group at 0 does not move (evaluating a model started with --init-from, freezing the backbone)
    lr: float = Field(1e-3, ge=0, le=10, description="Peak learning rate of the backbone (0: it does not move).")
    lr_head: float = Field(1e-3, ge=0, le=10, description="Peak learning rate of the heads (JEPA heads, LM head/embedding, logit scale, bias).")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine decays to min_lr_ratio * lr.")
    warmup_steps: int = Field(100, ge=0, le=MAX_STEPS, description="Linear LR warmup steps.")
    weight_decay: float = Field(0.1, ge=0, le=10, description="AdamW weight decay on backbone matrices.")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW beta2.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this; 0 disables.")
    optimizer: Literal["adamw", "muon"] = Field(
        "adamw",
        description="adamw: AdamW for every group. muon: Muon (torch.optim.Muon, torch >= 2.9) for the 2-D matrices inside the blocks, AdamW for the rest.",
    )
    muon_lr: float = Field(0.02, ge=0, le=10, description="Peak learning rate of the Muon group (optimizer = muon); same warmup and cosine as lr.")
    muon_momentum: float = Field(0.95, ge=0, lt=1, description="Muon momentum (Nesterov).")
    muon_weight_decay: float = Field(0.0, ge=0, le=10, description="Decoupled weight decay of the Muon group (scaled by its learning rate).")
    muon_ns_steps: int = Field(5, ge=1, le=20, description="Newton-Schulz iterations per Muon update (fewer: cheaper, rougher orthogonalisation).")
    muon_ns_dtype: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description=(
            "Dtype of Muon's Newton-Schulz iterations. bf16 is torch's choice and fast on CUDA and on CPUs with "
            "native bf16 matmul (AVX512-BF16, AMX, Arm BF16); elsewhere bf16 matmul is emulated and 10-35x slower "
            "than fp32. auto: bf16 where it is fast, fp32 elsewhere."
        ),
    )


class TrainConfig(_Section):
    max_steps: int = Field(1000, ge=1, le=MAX_STEPS, description="Optimizer steps.", json_schema_extra=BOTH)
    batch_size: int = Field(32, ge=1, le=MAX_BATCH, description="Sequences per micro-batch (per rank).", json_schema_extra=SAME_ACROSS_ARMS)
    grad_accum_steps: int = Field(1, ge=1, le=MAX_BATCH, description="Micro-batches per optimizer step.", json_schema_extra=SAME_ACROSS_ARMS)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast where bf16 matmul is native (CUDA; CPUs with avx512_bf16, AMX or Arm bf16), else fp32; a resumed run keeps the precision it trained in.")
    compile: bool = Field(False, description="torch.compile the model (CUDA; compile time is reported).", json_schema_extra=SAME_ACROSS_ARMS)
    parallel: Literal["auto", "ddp", "fsdp"] = Field(
        "auto",
        description="Under torchrun: ddp (every rank holds the whole model and optimizer) or fsdp (FSDP2 fully_shard: "
        "parameters, gradients and AdamW moments sharded across ranks). auto: ddp. Ignored in one process.",
        json_schema_extra=SAME_ACROSS_ARMS,
    )
    reshard_after_forward: bool = Field(
        True,
        description="fsdp: free each block's gathered parameters after its forward and gather them again for the backward "
        "(less memory, one more all-gather per block); false keeps them until the backward.",
        json_schema_extra=SAME_ACROSS_ARMS,
    )
    seed: int = Field(1337, ge=0, le=MAX_SEED, description="Seed for init, data order and pair sampling.", json_schema_extra=SAME_ACROSS_ARMS)
    time_budget_s: float = Field(0.0, ge=0, le=MAX_SECONDS, description="Stop after this many seconds of training (0: no limit).", json_schema_extra=BOTH)
    eval_every: int = Field(100, ge=1, le=MAX_STEPS, description="Evaluate every N steps (and at the end).", json_schema_extra=BOTH)
    eval_batches: int = Field(
        8, ge=1, le=MAX_STEPS, description="Ignored; kept so older config files load. An eval now scores the whole validation split (see eval_tokens).",
        json_schema_extra=RESUME_SAFE,
    )
    eval_tokens: int = Field(
        0, ge=0, le=MAX_TOKENS, description="Score at most this many validation tokens per eval (the first ones of the split); 0 scores them all.",
        json_schema_extra=BOTH,
    )
    eval_stride: int = Field(
        0,
        ge=0,
        description="0: score the validation split in non-overlapping blocks of block_size. N > 0: sliding windows "
        "moved N tokens at a time, every token scored once with at least block_size - N tokens of context (slower, lower BPB).",
        json_schema_extra=BOTH,
    )
    checkpoint_every: int = Field(500, ge=1, le=MAX_STEPS, description="Write a checkpoint every N steps (and at the end).", json_schema_extra=RESUME_SAFE)
    keep_last: int = Field(3, ge=1, le=MAX_STEPS, description="Checkpoints kept on disk.", json_schema_extra=RESUME_SAFE)
    keep_best: bool = Field(
        True, description="Keep the checkpoint with the best val loss outside the rotation, named in checkpoints/best.json.",
        json_schema_extra=RESUME_SAFE,
    )
    overfit_margin: float = Field(
        0.02, ge=0, description="Overfitting alert: val loss this many nats above its best ...",
        json_schema_extra=RESUME_SAFE,
    )
    overfit_evals: int = Field(2, ge=1, le=MAX_STEPS, description="... for this many evals in a row (the alert fires once).", json_schema_extra=RESUME_SAFE)
    early_stop_evals: int = Field(0, ge=0, le=MAX_STEPS, description="Stop after N evals without a new best val loss (0: never); status early_stopped.", json_schema_extra=RESUME_SAFE)
    sample_every: int = Field(0, ge=0, le=MAX_STEPS, description="Write a text sample every N steps (0: at each eval).", json_schema_extra=RESUME_SAFE)
    sample_tokens: int = Field(64, ge=0, le=MAX_TOKENS, description="Tokens generated per sample (0 disables samples).", json_schema_extra=RESUME_SAFE)
    sample_prompt: str = Field("\n", description="Fixed prompt for samples.", json_schema_extra=RESUME_SAFE)
    out_dir: str = Field("runs", description="Where run directories are created.", json_schema_extra=RESUME_SAFE)
    init_from: str = Field(
        "",
        description="Start from these weights instead of random ones (weights only: fresh optimizer, schedule and data "
        "position, step 0): a run directory (RUN, RUN:best, RUN:step-N), a weights file written by jepa, or hf:DIR. "
        "The run uses the source's tokenizer; the model keys must match the source's (docs/finetune.md). "
        "May differ between ablation arms: the starting point as the treatment (their init digests then differ by design).",
    )


class LogConfig(_Section):
    every: int = Field(10, ge=1, le=MAX_STEPS, description="Log train metrics every N steps.", json_schema_extra=RESUME_SAFE)
    tensorboard: bool = Field(False, description="Also write TensorBoard event files.", json_schema_extra=RESUME_SAFE)
    wandb: bool = Field(False, description="Also log to Weights & Biases (offline mode without an API key).", json_schema_extra=RESUME_SAFE)
    wandb_project: str = Field("jepa", description="W&B project name.", json_schema_extra=RESUME_SAFE)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=False)

    name: str = Field("custom", description="Profile name.")
    description: str = Field("", description="What this profile is for.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    jepa: JepaConfig = Field(default_factory=JepaConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        m, j, d = self.model, self.jepa, self.data
        if m.d_model % m.n_heads:
            raise _CrossError("model.n_heads", f"d_model {m.d_model} is not divisible by n_heads {m.n_heads}")
        if (m.d_model // m.n_heads) % 2:
            raise _CrossError("model.n_heads", f"head size d_model/n_heads = {m.d_model // m.n_heads} must be even for RoPE")
        if not -m.n_layers <= m.tap_layer <= m.n_layers - 1:
            raise _CrossError(
                "model.tap_layer",
                f"tap_layer {m.tap_layer} is outside [-{m.n_layers}, {m.n_layers - 1}] for n_layers = {m.n_layers}",
            )
        if any(h < 1 for h in j.horizons):
            raise _CrossError("jepa.horizons", f"horizons must be >= 1, got {j.horizons}")
        if len(set(j.horizons)) != len(j.horizons):
            raise _CrossError("jepa.horizons", f"horizons must be distinct, got {j.horizons}")
        too_far = [h for h in j.horizons if h >= d.block_size]
        if too_far:
            raise _CrossError(
                "jepa.horizons",
                f"horizon(s) {too_far} >= data.block_size {d.block_size}; every horizon must be shorter than a block",
            )
        if len(j.horizons) != len(j.horizon_probs):
            raise _CrossError(
                "jepa.horizon_probs",
                f"{len(j.horizon_probs)} probabilities for {len(j.horizons)} horizons; give one per horizon",
            )
        if any(p < 0 for p in j.horizon_probs) or not math.isclose(sum(j.horizon_probs), 1.0, abs_tol=1e-6):
            raise _CrossError(
                "jepa.horizon_probs",
                f"horizon_probs {j.horizon_probs} must be non-negative and sum to 1 (they sum to {sum(j.horizon_probs):.6g})",
            )
        if j.ema_schedule == "cosine" and j.ema_momentum_final < j.ema_momentum:
            raise _CrossError(
                "jepa.ema_momentum_final",
                f"ema_momentum_final {j.ema_momentum_final} is below ema_momentum {j.ema_momentum}",
            )
        if self.train.eval_stride > d.block_size:
            raise _CrossError(
                "train.eval_stride",
                f"eval_stride {self.train.eval_stride} is larger than data.block_size {d.block_size}; "
                "use 1..block_size, or 0 for non-overlapping blocks",
            )
        if self.train.parallel == "fsdp" and self.optim.optimizer == "muon":
            # Newton-Schulz needs each whole matrix; on an FSDP shard it would orthogonalise a slice (docs/gpu.md)
            raise _CrossError(
                "optim.optimizer",
                "optimizer muon is not supported with train.parallel = \"fsdp\" (Muon orthogonalises whole matrices, "
                "FSDP holds a slice of each per rank); set optim.optimizer=\"adamw\", or train.parallel=\"ddp\" to keep Muon",
            )
        if not j.run_baseline:
            _check_pair_groups(j, d.block_size, self.train.batch_size)
        return self

    # Convenience views used by the model and trainer.
    @property
    def tap_index(self) -> int:
        return self.model.tap_index

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


def _check_pair_groups(j: JepaConfig, block_size: int, batch_size: int) -> None:
    """Refuse JEPA settings whose InfoNCE groups would be empty or have no negatives.

    Per rank and micro-batch the loss sees N = batch_size * pairs_per_seq pairs;
    horizon k's group holds n_k of them, floor or ceil of pairs_per_seq * p_k per
    sequence (see `sample_anchor_target_pairs`), so E[n_k] = N * p_k. "A group
    can hold fewer than 2 pairs" is read as: N < 2, or E[n_k] < 2 for a horizon
    with p_k > 0 (such a group would mostly have one pair or none, hence no
    negative). A sampled group that still ends up with one pair costs nothing:
    its InfoNCE row is 0 and var/cov are skipped below 2 rows.
    """
    B, P, T = batch_size, j.pairs_per_seq, block_size
    keys = "train.batch_size"
    if B * P < 2:
        raise _CrossError(
            keys,
            f"train.batch_size x jepa.pairs_per_seq = {B} x {P} = {B * P} pair per micro-batch; InfoNCE needs at least 2 pairs (a positive and a negative)",
        )
    for k, p in zip(j.horizons, j.horizon_probs):
        if p > 0 and P * p > T - k + 1e-9:
            raise _CrossError(
                "jepa.pairs_per_seq",
                f"horizon {k} would get pairs_per_seq x p = {P} x {p:g} = {P * p:g} pairs per sequence but has only "
                f"data.block_size - k = {T - k} anchors to draw them from without replacement; lower pairs_per_seq, "
                "the horizon or its probability, or raise data.block_size",
            )
    thin = [(k, B * P * p) for k, p in zip(j.horizons, j.horizon_probs) if p > 0 and B * P * p < 2 - 1e-9]
    if thin:
        what = ", ".join(f"horizon {k}: {n:g}" for k, n in thin)
        raise _CrossError(
            keys,
            f"with train.batch_size = {B} and jepa.pairs_per_seq = {P}, some horizons get fewer than 2 pairs per "
            f"micro-batch on average (batch_size x pairs_per_seq x p; {what} pairs), so their InfoNCE group mostly "
            "has no negative; raise batch_size or pairs_per_seq, or those horizons' probability (jepa.horizon_probs)",
        )
    if B == 1 and j.negatives == "other_sequences":
        raise _CrossError(
            "jepa.negatives",
            'negatives = "other_sequences" with train.batch_size = 1 masks every negative (InfoNCE would be 0); '
            'use negatives = "distant" or a batch_size of 2 or more',
        )
    if B == 1 and j.negatives == "distant":
        close = [k for k, p in zip(j.horizons, j.horizon_probs) if p > 0 and T - 1 - k < k]
        if close:
            raise _CrossError(
                "jepa.negatives",
                f'negatives = "distant" with train.batch_size = 1: horizon(s) {close} have every target within k of '
                f"every other (data.block_size {T} < 2k + 1), so every negative is masked; use a batch_size of 2 or more, "
                'shorter horizons, or negatives = "all"',
            )


class _CrossError(ValueError):
    def __init__(self, key: str, msg: str):
        super().__init__(msg)
        self.key = key
        self.msg = msg


SECTION_MODELS: dict[str, type[_Section]] = {
    "model": ModelConfig,
    "jepa": JepaConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "log": LogConfig,
}

def keys_with(prop: str) -> tuple[str, ...]:
    """Dotted keys whose field carries `prop` (see RESUME_SAFE), in schema order."""
    return tuple(
        f"{sec}.{name}" for sec, model in SECTION_MODELS.items() for name, f in model.model_fields.items() if (f.json_schema_extra or {}).get(prop)
    )


#: Keys that may differ between a checkpoint's config and a resumed run's (names, and the fields marked so).
RESUME_SAFE_KEYS = frozenset({"name", "description", *keys_with("resume_safe")})
#: Keys every arm of an ablation must share (`jepa ablate` checks them before anything runs).
SAME_ACROSS_ARMS_KEYS = keys_with("same_across_arms")


def all_keys() -> list[str]:
    keys = [k for k in TOP_LEVEL_KEYS]
    for sec, model in SECTION_MODELS.items():
        keys.extend(f"{sec}.{f}" for f in model.model_fields)
    return keys


def field_of(dotted: str):
    sec, _, key = dotted.partition(".")
    model = SECTION_MODELS.get(sec)
    return model.model_fields.get(key) if model is not None else None


def upper_bound(dotted: str) -> int | float | None:
    """The `le=` of a key, None when it has none."""
    f = field_of(dotted)
    for m in f.metadata if f is not None else ():
        if getattr(m, "le", None) is not None:
            return m.le
    return None
