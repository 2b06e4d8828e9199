"""Helpers for the Hugging Face tests: a random Llama saved by transformers, and jepa's LM
built from what `read_hf_model` returns."""

from __future__ import annotations

from pathlib import Path

import torch

V = 300  # the vocabulary of the random Llamas


def _toml(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else repr(v)


def jepa_model_from(hfm, block_size: int = 40):
    """jepa's LM built from the keys the directory fixes (the rest from `tiny-baseline`), loaded."""
    from jepa_core.config import load_config
    from jepa_core.model import JepaLM

    sets = [f"model.{k}={_toml(v)}" for k, v in hfm.model.items()]
    sets += [f"data.block_size={block_size}", f"jepa.run_baseline={_toml(hfm.run_baseline)}", "jepa.latent_dim=16", "jepa.horizons=[1]", "jepa.horizon_probs=[1.0]"]
    cfg = load_config("tiny-baseline", sets)
    m = JepaLM.from_config(cfg, hfm.vocab_size, seed=1)
    missing, unexpected = m.load_state_dict(hfm.tensors, strict=False)
    assert unexpected == []
    assert all(n.startswith(("jepa.", "teacher.", "transformer.tap_norm.")) for n in missing), missing
    return m.eval()


def save_llama(out: Path, *, tied: bool = False, ff: int = 80, d: int = 32, seed: int = 0, **kw) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=V, hidden_size=d, intermediate_size=ff, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=64, rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=tied, **kw,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # norms away from 1, so a lost or misplaced norm weight shows
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif p.dim() == 2:
                p.normal_(0, 0.2)
    model.save_pretrained(out)
    return out
