"""Where the LM and JEPA gradients meet: their norms and cosine on the shared backbone.

Logged on log steps as `grad_norm_lm`, `grad_norm_jepa` and `grad_cos`. Both
gradients are the weighted ones, as they enter the total loss (lm_weight * CE,
jepa_weight * L_jepa), of one micro-batch's mean loss. "Backbone" is what
roles.py counts as backbone (embedding, hidden matrices, vectors): the heads
are reached by one loss only, and a tied embedding is the LM head's weight.

The step's own backward stays exactly as it is, so training is bit-identical
with or without the probe. The probe adds one backward: the JEPA part with
`autograd.grad` (retaining the graph) just before it; the LM part is then the
micro-batch's gradient minus the JEPA part. That difference carries the
rounding of both terms, relative to the larger one: ~1e-7 in fp32, but under
bf16 autocast (~4e-3) it would swamp an LM part 80 times smaller than the JEPA
part (seen at init on `tiny`), so there the LM part gets its own backward too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jepa_core.model.roles import COUNT_OF_ROLE, param_role

FIELDS = ("grad_norm_lm", "grad_norm_jepa", "grad_cos")


def backbone_params(model) -> list[torch.nn.Parameter]:
    tied = model.transformer.weight_tying
    return [p for name, p in model.named_parameters()
            if p.requires_grad and COUNT_OF_ROLE[param_role(name, p.ndim, tied)] == "backbone"]


@dataclass
class GradProbe:
    params: list[torch.nn.Parameter]
    jepa_grads: list[torch.Tensor]
    before: list[torch.Tensor | None]  # .grad before the micro-batch's backward (earlier micro-batches)
    scale: float  # the step backpropagates loss / accum: undo it
    lm_grads: list[torch.Tensor] | None = None  # from their own backward (exact_lm)

    @classmethod
    def before_backward(cls, model, lm_term: torch.Tensor, jepa_term: torch.Tensor, accum: int, exact_lm: bool) -> "GradProbe":
        """Call with the weighted loss terms of the micro-batch about to be backpropagated;
        `exact_lm` takes the LM part from its own backward instead of by difference."""
        params = backbone_params(model)
        jepa_grads = _grads(jepa_term / accum, params)
        if exact_lm:
            return cls(params, jepa_grads, [], float(accum), _grads(lm_term / accum, params))
        before = [None if p.grad is None else p.grad.detach().clone() for p in params]
        return cls(params, jepa_grads, before, float(accum))

    def _lm_grads(self) -> list[torch.Tensor]:
        if self.lm_grads is not None:
            return self.lm_grads
        out = []
        for p, gj, b in zip(self.params, self.jepa_grads, self.before):
            total = torch.zeros_like(p) if p.grad is None else (p.grad if b is None else p.grad - b)
            out.append(total - gj)
        return out

    def after_backward(self) -> dict[str, float | None]:
        """The three fields, from the gradients the micro-batch's backward added (one host sync)."""
        f64 = torch.float64
        device = self.params[0].device
        lm2, jepa2, dot = (torch.zeros((), dtype=f64, device=device) for _ in range(3))
        for gl, gj in zip(self._lm_grads(), self.jepa_grads):
            gl, gj = gl.to(f64), gj.to(f64)
            lm2 += gl.pow(2).sum()
            jepa2 += gj.pow(2).sum()
            dot += (gl * gj).sum()
        n_lm, n_jepa, d = torch.stack((lm2.sqrt(), jepa2.sqrt(), dot)).tolist()
        cos = d / (n_lm * n_jepa) if n_lm > 0 and n_jepa > 0 else None
        return {"grad_norm_lm": n_lm * self.scale, "grad_norm_jepa": n_jepa * self.scale, "grad_cos": cos}


def _grads(term: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
