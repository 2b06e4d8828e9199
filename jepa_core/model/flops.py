"""Training FLOPs per token, the usual dense-transformer estimate (for MFU).

Convention (Kaplan et al. / PaLM appendix B): a matmul weight used once per
token costs 2 FLOPs forward and 4 backward, so 6 * N_matmul per trained
token, plus attention scores and values, 12 * n_layers * d_model * T
(forward 4*L*d*T, twice that backward; causal masking is not discounted, as
in the usual MFU figures). Embedding lookups, norms, activations and
biases are ignored. JEPA adds:
- the lm_bridge (two d x d matmuls on every token; model.lm_bridge), trained: 6 * 2d^2;
- the heads, which run on pairs_per_seq of every T tokens (ratio r = P/T):
  online projector and predictor trained (6x), target projector forward only
  (2x); the InfoNCE logits, an N x N x latent matmul per batch (N =
  batch_size * P pairs) whose backward only reaches the predictions:
  4 * N * latent per pair; and the anchors' covariance z_c^T z_c, trained:
  6 * latent^2 per pair (the predictions' too when gamma_cov_pred > 0);
- with teacher = "encoder", a forward-only pass of blocks 0..tl-1 on every
  token, 2 * N_matmul(blocks 0..tl-1) + 4 * tl * d * T, and of block tl at the
  target rows only: keys/values on every token (2 * 2d^2), queries, output
  projection and MLP on P of T tokens, attention of P queries over T keys
  (4 * r * T * d).
"""

from __future__ import annotations

from ..config import Config
from .transformer import swiglu_hidden


def _block_matmul_params(d: int, hidden: int) -> int:
    # qkv 3d^2 + proj d^2 + w12 2*d*hidden + w3 hidden*d
    return 4 * d * d + 3 * d * hidden


def estimate_flops_per_token(cfg: Config, vocab_size: int) -> float:
    """Estimated training FLOPs per token (forward + backward) at block_size T."""
    m, j = cfg.model, cfg.jepa
    d, L, T = m.d_model, m.n_layers, cfg.data.block_size
    hidden = swiglu_hidden(d, m.ff_multiplier, m.ff_round)
    n_matmul = L * _block_matmul_params(d, hidden) + vocab_size * d  # LM head (tied or not)
    flops = 6.0 * n_matmul + 12.0 * L * d * T
    if j.run_baseline:
        return flops
    if m.lm_bridge:
        flops += 6.0 * 2 * d * d  # lm_bridge
    lat, hid = j.latent_dim, j.hidden_mult * j.latent_dim
    r = j.pairs_per_seq / T
    proj = d * hid + hid * lat
    pred = 2 * lat * hid + hid * lat
    n_pairs = cfg.train.batch_size * j.pairs_per_seq
    n_cov = 2 if j.gamma_cov_pred else 1
    flops += r * (6.0 * (proj + pred) + 2.0 * proj + 4.0 * n_pairs * lat + n_cov * 6.0 * lat * lat)
    if j.teacher == "encoder":
        tl = cfg.tap_index
        flops += 2.0 * tl * _block_matmul_params(d, hidden) + 4.0 * tl * d * T
        flops += 2.0 * 2 * d * d + r * 2.0 * (_block_matmul_params(d, hidden) - 2 * d * d) + 4.0 * r * T * d
    return flops


def model_flops_utilization(tok_per_s: float, flops_per_token: float, peak_flops_per_device: float, devices: int = 1) -> float:
    """MFU: achieved training FLOP/s over the peak of every device that produced them.

    Under torchrun `tok_per_s` counts the tokens of all ranks, so the peak is one device's
    times their number (the train log's `mfu` once read world-size times too high)."""
    return tok_per_s * flops_per_token / (peak_flops_per_device * devices)
