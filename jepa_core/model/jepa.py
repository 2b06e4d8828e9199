"""The JEPA objective on top of the LM stack (docs/architecture.md, "One step").

Anchor/target pairs are sampled per sequence; the online projector embeds the
tap activation at the anchor, the predictor maps it (with a horizon
embedding) to the latent of the token k positions ahead, and an EMA teacher
gives the target latent. The loss is per-horizon InfoNCE plus VICReg
variance/covariance penalties. `JepaLM` owns the transformer, the heads and
the teacher and returns one `ModelOutput` per forward.

State-dict prefixes are part of the checkpoint format: `transformer.*`,
`jepa.online_proj.*`, `jepa.predictor.*`, `jepa.horizon_emb.weight`,
`teacher.target_proj.*` and (teacher = "encoder") `teacher.encoder.*`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, JepaConfig, ModelConfig
from .flops import estimate_flops_per_token
from .pairs import Pairs, pair_capacity_error, sample_anchor_target_pairs
from .param_groups import build_param_groups, check_param_groups
from .roles import COUNT_OF_ROLE, in_shared_lm, param_role
from .transformer import DecoderOnlyTransformer, RotaryEmbedding, TapEncoder, default_seed, normal_by_name_

__all__ = [
    "Pairs",
    "sample_anchor_target_pairs",
    "pair_capacity_error",
    "NEGATIVES",
    "negatives_mask",
    "info_nce",
    "variance_loss",
    "covariance_loss",
    "ema_momentum_at",
    "lm_weight_at",
    "jepa_weight_at",
    "ModelOutput",
    "JepaLM",
    "build_param_groups",
    "check_param_groups",
    "estimate_flops_per_token",
]


# --------------------------------------------------------------------------- losses


NEGATIVES = ("distant", "all", "other_sequences")


def negatives_mask(
    k_idx: torch.Tensor,
    negatives: str,
    seq_ids: torch.Tensor | None = None,
    tpos: torch.Tensor | None = None,
    k: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, N) bool, True where column j is NOT a candidate in row i's softmax.

    Always dropped: other horizons (k_idx_j != k_idx_i). Then, for j != i:
    "all" drops nothing more; "other_sequences" drops the same sequence
    (b_j == b_i); "distant" drops the same sequence when the targets are
    closer than row i's horizon (b_j == b_i and |u_j - u_i| < k_i, u = t + k):
    those targets share most of their context with the positive. The diagonal
    (the positive) is never dropped.
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
    drop = k_idx[:, None] != k_idx[None, :]
    if negatives == "all":
        return drop
    if seq_ids is None:
        raise ValueError(f"negatives={negatives!r} needs seq_ids")
    same = seq_ids[:, None] == seq_ids[None, :]
    if negatives == "distant":
        if tpos is None or k is None:
            raise ValueError("negatives='distant' needs tpos and k")
        same = same & ((tpos[None, :] - tpos[:, None]).abs() < k[:, None])
    eye = torch.eye(k_idx.shape[0], dtype=torch.bool, device=k_idx.device)
    return drop | (same & ~eye)


def info_nce(
    p: torch.Tensor,
    y: torch.Tensor,
    k_idx: torch.Tensor,
    tau: float,
    *,
    negatives: str = "all",
    seq_ids: torch.Tensor | None = None,
    tpos: torch.Tensor | None = None,
    k: torch.Tensor | None = None,
) -> torch.Tensor:
    """sum_h (n_h/N) * CE(p_h y_h^T / tau, diagonal); p and y are already L2-normalised.

    One N x N matmul with `negatives_mask` applied: row i's softmax then runs
    over its positive and its negatives only, and the n_h/N weighting of
    per-horizon means is exactly the mean over all N rows. A row left with no
    negative (a horizon with one pair, or every negative masked) has CE = 0
    exactly: it adds nothing and no gradient, never a NaN.
    """
    p, y = p.float(), y.float()
    n = p.shape[0]
    logits = (p @ y.T) / tau
    drop = negatives_mask(k_idx, negatives, seq_ids, tpos, k)
    logits = logits.masked_fill(drop, float("-inf"))  # the diagonal is never masked
    target = torch.arange(n, device=p.device)
    return F.cross_entropy(logits, target)


def variance_loss(z: torch.Tensor) -> torch.Tensor:
    """mean_j relu(1 - sqrt(var_j(z) + 1e-4)), population variance over the batch.

    Skipped (0) for fewer than 2 rows: one row has no spread to measure.
    """
    z = z.float()
    if z.shape[0] < 2:
        return z.new_zeros(())
    std = torch.sqrt(z.var(dim=0, unbiased=False) + 1e-4)
    return F.relu(1.0 - std).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """(||C||_F^2 - ||diag C||^2) / D with C = z_c^T z_c / (N - 1).

    Skipped (0) for fewer than 2 rows, where N - 1 = 0 would make it NaN.
    """
    z = z.float()
    n, d = z.shape
    if n < 2:
        return z.new_zeros(())
    zc = z - z.mean(dim=0, keepdim=True)
    c = (zc.T @ zc) / (n - 1)
    return (c.pow(2).sum() - torch.diagonal(c).pow(2).sum()) / d


def _mean_std(z: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension (population) std: the collapse diagnostic."""
    return z.detach().float().var(dim=0, unbiased=False).sqrt().mean()


# --------------------------------------------------------------------------- schedules


def ema_momentum_at(jcfg: JepaConfig, step: int, max_steps: int) -> float:
    """Constant m, or m0 + (m1 - m0) * 0.5 * (1 - cos(pi * min(1, step / S)))."""
    if jcfg.ema_schedule == "constant":
        return float(jcfg.ema_momentum)
    s = jcfg.ema_schedule_steps or max_steps
    frac = min(1.0, max(0.0, step / max(1, s)))
    m0, m1 = jcfg.ema_momentum, jcfg.ema_momentum_final
    return float(m0 + (m1 - m0) * 0.5 * (1.0 - math.cos(math.pi * frac)))


def jepa_weight_at(jcfg: JepaConfig, step: int, max_steps: int) -> float:
    """JEPA loss weight at `step` (1-based): jepa_weight, or with "anneal" jepa_weight * min(1, (S - step) / (f * S)).

    Annealed, it holds until step S - f * S, then falls linearly and is exactly 0
    at the last step S = max_steps, so the run ends on the LM objective alone
    (the modded-nanogpt speedrun anneals its auxiliary losses the same way).
    """
    if jcfg.jepa_weight_schedule == "constant":
        return float(jcfg.jepa_weight)
    span = jcfg.jepa_weight_anneal_frac * max_steps
    return float(jcfg.jepa_weight * min(1.0, max(0.0, (max_steps - step) / span)))


def lm_weight_at(jcfg: JepaConfig, step: int, max_steps: int) -> float:
    """LM loss weight: 1 for the baseline; lm_weight, or 0 until lm_warmup_steps then linear to it."""
    if jcfg.run_baseline:
        return 1.0
    if not jcfg.lm_weight_use_scheduler:
        return float(jcfg.lm_weight)
    if step < jcfg.lm_warmup_steps:
        return 0.0
    end = jcfg.lm_ramp_steps or max_steps
    if end <= jcfg.lm_warmup_steps:
        return float(jcfg.lm_weight)
    frac = min(1.0, (step - jcfg.lm_warmup_steps) / (end - jcfg.lm_warmup_steps))
    return float(jcfg.lm_weight * frac)


# --------------------------------------------------------------------------- heads


def make_mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    """Linear -> GELU -> Dropout -> Linear (the projector / predictor shape)."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))


class JepaHeads(nn.Module):
    """Trainable JEPA heads: online projector, predictor and horizon embedding."""

    def __init__(self, d_model: int, jcfg: JepaConfig):
        super().__init__()
        lat, hid = jcfg.latent_dim, jcfg.hidden_mult * jcfg.latent_dim
        self.online_proj = make_mlp(d_model, hid, lat, jcfg.head_dropout)
        self.predictor = make_mlp(2 * lat, hid, lat, jcfg.head_dropout)
        self.horizon_emb = nn.Embedding(len(jcfg.horizons), lat)

    def reset_parameters(self, seed: int) -> None:
        # Fan-in init (std 1/sqrt(fan_in)), not the backbone's 0.02: the latents then
        # start with per-dim std of order 1, where the VICReg variance term wants them,
        # instead of ~0.02, right at the collapse alert floor. Horizon embeddings N(0, 1)
        # have the scale of z_a they are concatenated with.
        # One generator per state-dict name (see transformer.py): the heads' init does not
        # depend on the teacher or anything else built before them.
        for mname, mod in self.named_modules():
            if isinstance(mod, nn.Linear):
                normal_by_name_(mod.weight, mod.in_features**-0.5, seed, f"jepa.{mname}.weight")
                nn.init.zeros_(mod.bias)
        normal_by_name_(self.horizon_emb.weight, 1.0, seed, "jepa.horizon_emb.weight")

    def predict(self, z_a: torch.Tensor, k_idx: torch.Tensor) -> torch.Tensor:
        return self.predictor(torch.cat((z_a, self.horizon_emb(k_idx).to(z_a.dtype)), dim=-1))


class Teacher(nn.Module):
    """EMA teacher: `target_proj` (both teachers) and, for "encoder", the stack up to the tap."""

    def __init__(self, m: ModelConfig, j: JepaConfig, vocab_size: int, block_size: int):
        super().__init__()
        self.target_proj = make_mlp(m.d_model, j.hidden_mult * j.latent_dim, j.latent_dim, 0.0)
        self.encoder = TapEncoder(m, vocab_size, block_size) if j.teacher == "encoder" else None

    def train(self, mode: bool = True) -> "Teacher":
        # the teacher never uses dropout: its targets must not be noisy
        return super().train(False)


# --------------------------------------------------------------------------- the model


@dataclass
class ModelOutput:
    loss: torch.Tensor
    lm_loss: torch.Tensor
    jepa_loss: torch.Tensor | None = None
    # detached 0-d tensors (no host sync in forward): info_nce, var_loss, cov_loss, std_anchor, std_pred
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class JepaLM(nn.Module):
    """Decoder-only LM with the JEPA auxiliary objective (or the LM-only baseline)."""

    def __init__(self, model_cfg: ModelConfig, jepa_cfg: JepaConfig, vocab_size: int, block_size: int, seed: int | None = None):
        """`seed` keys every parameter's initial value (None: the last torch.manual_seed)."""
        super().__init__()
        self.jcfg = jepa_cfg
        self.vocab_size = vocab_size
        self.is_baseline = bool(jepa_cfg.run_baseline)
        seed = default_seed(seed)
        self.transformer = DecoderOnlyTransformer(model_cfg, vocab_size, block_size, with_tap=not self.is_baseline, seed=seed)
        if self.is_baseline:
            self.jepa = None
            self.teacher = None
            self._ema_pairs: list[tuple[str, str]] = []
            return
        self.jepa = JepaHeads(model_cfg.d_model, jepa_cfg)
        self.jepa.reset_parameters(seed)
        self.teacher = Teacher(model_cfg, jepa_cfg, vocab_size, block_size)
        self.teacher.requires_grad_(False)
        self._ema_pairs = self._teacher_online_names()
        with torch.no_grad():
            for t, o in zip(self.teacher_parameters(), self._online_for_teacher()):
                t.copy_(o)

    @classmethod
    def from_config(cls, cfg: Config, vocab_size: int, seed: int | None = None) -> "JepaLM":
        """The model a profile describes (its block size, the prepared tokenizer's vocabulary)."""
        return cls(cfg.model, cfg.jepa, vocab_size, cfg.data.block_size, seed=seed)

    # -- EMA teacher ---------------------------------------------------------------

    def _teacher_online_names(self) -> list[tuple[str, str]]:
        """(teacher name, online name) for every teacher parameter."""
        pairs = []
        for name, _ in self.teacher.named_parameters():
            if name.startswith("target_proj."):
                online = "jepa.online_proj." + name[len("target_proj."):]
            elif name.startswith("encoder."):
                online = "transformer." + name[len("encoder."):]
            else:  # pragma: no cover - a new teacher part without a mapping is a bug
                raise RuntimeError(f"teacher parameter {name} has no online counterpart")
            pairs.append(("teacher." + name, online))
        return pairs

    def _online_for_teacher(self) -> list[nn.Parameter]:
        params = dict(self.named_parameters())
        return [params[o] for _, o in self._ema_pairs]

    def teacher_parameters(self) -> list[nn.Parameter]:
        """The EMA teacher's parameters (requires_grad False); [] for the baseline."""
        if self.teacher is None:
            return []
        params = dict(self.named_parameters())
        return [params[t] for t, _ in self._ema_pairs]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """t = m * t + (1 - m) * o for every teacher parameter (after each optimizer step)."""
        if self.teacher is None:
            return
        teacher, online = self.teacher_parameters(), self._online_for_teacher()
        # lerp(t, o, 1 - m) = t + (1 - m)(o - t) = m t + (1 - m) o, one fused op over all tensors
        torch._foreach_lerp_(teacher, [o.detach() for o in online], 1.0 - float(momentum))

    def train(self, mode: bool = True) -> "JepaLM":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.train(False)
        return self

    # -- forward --------------------------------------------------------------------

    def sample_pairs(self, batch_size: int, seq_len: int, device, generator: torch.Generator | None = None) -> Pairs:
        j = self.jcfg
        return sample_anchor_target_pairs(
            batch_size, seq_len, j.horizons, j.horizon_probs, j.pairs_per_seq, device, generator
        )

    def jepa_latents(
        self, idx: torch.Tensor, h_tap: torch.Tensor, pairs: Pairs, per_seq: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_anchor, z_pred, z_target) for the pairs; z_target carries no gradient.

        `per_seq` = P promises the layout of sampled pairs (pairs.b ==
        arange(B).repeat_interleave(P)); the encoder teacher then computes its
        last block only at the target positions.
        """
        z_a = self.jepa.online_proj(h_tap[pairs.b, pairs.t])
        z_p = self.jepa.predict(z_a, pairs.k_idx)
        tpos = pairs.tpos
        with torch.no_grad():
            if self.teacher.encoder is not None:
                # the EMA stack up to the tap, never past it, without autograd
                if per_seq is not None:
                    h_sel = self.teacher.encoder(idx, tpos.view(idx.shape[0], per_seq))
                    h_sel = h_sel.reshape(-1, h_sel.shape[-1])
                else:
                    h_sel = self.teacher.encoder(idx)[pairs.b, tpos]
            else:
                h_sel = h_tap.detach()[pairs.b, tpos]
            z_t = self.teacher.target_proj(h_sel)
        return z_a, z_p, z_t

    def jepa_objective(
        self, z_a: torch.Tensor, z_p: torch.Tensor, z_t: torch.Tensor, pairs: Pairs
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        j = self.jcfg
        p = F.normalize(z_p.float(), dim=-1)
        y = F.normalize(z_t.float(), dim=-1)
        nce = info_nce(
            p, y, pairs.k_idx, j.tau, negatives=j.negatives, seq_ids=pairs.b, tpos=pairs.tpos, k=pairs.k
        )
        var_a, cov_a = variance_loss(z_a), covariance_loss(z_a)
        loss = nce + j.gamma_var * var_a + j.gamma_cov * cov_a
        if j.gamma_var_pred:
            loss = loss + j.gamma_var_pred * variance_loss(z_p)
        if j.gamma_cov_pred:
            loss = loss + j.gamma_cov_pred * covariance_loss(z_p)
        stats = {
            "info_nce": nce.detach(),
            "var_loss": var_a.detach(),
            "cov_loss": cov_a.detach(),
            "std_anchor": _mean_std(z_a),
            "std_pred": _mean_std(z_p),
        }
        return loss, stats

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor,
        lm_weight: float = 1.0,
        pairs: Pairs | None = None,
        generator: torch.Generator | None = None,
        jepa_weight: float | torch.Tensor | None = None,
    ) -> ModelOutput:
        """loss = lm_weight * CE + jepa_weight * L_jepa (baseline: loss = CE).

        `jepa_weight` defaults to the config's (its scheduled value comes from the step).
        Pairs are sampled from `generator` or the global RNG unless given.
        """
        h, h_tap = self.transformer(idx)
        logits = self.transformer.logits(h)
        lm_loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))
        if self.is_baseline:
            return ModelOutput(loss=lm_loss, lm_loss=lm_loss)
        B, T = idx.shape
        per_seq = None
        if pairs is None:
            pairs = self.sample_pairs(B, T, idx.device, generator)
            per_seq = self.jcfg.pairs_per_seq
        z_a, z_p, z_t = self.jepa_latents(idx, h_tap, pairs, per_seq)
        jepa_loss, stats = self.jepa_objective(z_a, z_p, z_t, pairs)
        jw = self.jcfg.jepa_weight if jepa_weight is None else jepa_weight
        loss = lm_weight * lm_loss + jw * jepa_loss
        return ModelOutput(loss=loss, lm_loss=lm_loss, jepa_loss=jepa_loss, stats=stats)

    def lm_logits(self, idx: torch.Tensor) -> torch.Tensor:
        h, _ = self.transformer(idx)
        return self.transformer.logits(h)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample continuations of (B, T0) or (T0,) prompts; temperature <= 0 is greedy.

        The context is cropped to the last block_size tokens (no KV cache: samples are short).
        Returns the prompt followed by the new tokens, with the prompt's shape convention.
        """
        squeeze = prompt_ids.dim() == 1
        ids = prompt_ids[None] if squeeze else prompt_ids
        if ids.shape[1] == 0:
            raise ValueError("generate needs a prompt of at least one token")
        was_training = self.training
        self.eval()
        try:
            max_len = self.transformer.max_seq_len
            for _ in range(max_new_tokens):
                h, _ = self.transformer(ids[:, -max_len:])
                logits = self.transformer.logits(h[:, -1]).float()
                if temperature <= 0:
                    nxt = logits.argmax(dim=-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None and top_k < logits.shape[-1]:
                        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    probs = torch.softmax(logits, dim=-1)
                    if generator is not None and generator.device != probs.device:
                        nxt = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device)
                    else:
                        nxt = torch.multinomial(probs, 1, generator=generator)
                ids = torch.cat((ids, nxt), dim=1)
        finally:
            self.train(was_training)
        return ids[0] if squeeze else ids

    # -- bookkeeping -------------------------------------------------------------------

    def reset_rope_tables(self) -> None:
        """Recompute the RoPE tables (non-persistent, so not in checkpoints): call after
        building on the meta device and `to_empty(device=...)`, before loading weights."""
        for mod in self.modules():
            if isinstance(mod, RotaryEmbedding):
                mod.reset_tables()

    def shared_lm_digest(self) -> str:
        """sha256 over (name, bytes) of the parameters every arm shares (`roles.in_shared_lm`),
        in sorted name order: equal for two arms exactly when their shared weights are.

        Taken at initialisation it shows that arms of one seed start from the same weights.
        """
        tied = self.transformer.weight_tying
        h = hashlib.sha256()
        params = dict(self.named_parameters())
        for name in sorted(params):
            p = params[name]
            if in_shared_lm(name, p.ndim, tied):
                h.update(name.encode() + b"\0")
                # an FSDP-sharded parameter is gathered whole (every rank computes the digest together)
                whole = p.full_tensor() if hasattr(p, "full_tensor") else p
                h.update(whole.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def param_counts(self) -> dict[str, int]:
        """Parameters per count of `roles.COUNT_OF_ROLE` (backbone, lm_head, jepa_heads, teacher)
        and total_trainable; `jepa inspect` splits a checkpoint the same way, so a tied
        embedding counts with the LM head in both."""
        tied = self.transformer.weight_tying
        counts = dict.fromkeys(("backbone", "lm_head", "jepa_heads", "teacher"), 0)
        for name, p in self.named_parameters():
            counts[COUNT_OF_ROLE[param_role(name, p.ndim, tied)]] += p.numel()
        counts["total_trainable"] = counts["backbone"] + counts["lm_head"] + counts["jepa_heads"]
        return counts
