"""LoRA weights in the base's dtype with an fp32 master copy in the optimizer, over few flat tensors.

Why: under autocast, fp32 LoRA weights are cast to bf16 on every call of every LoRA layer (baselines.md: 6,646
`aten::copy_` per SDXL step), and a per-tensor optimizer, zero_grad and clip touch thousands of small tensors.
Here the weights are bf16 from the start (no casts in the step), the optimizer updates an fp32 copy (small updates
do not round away, which is why the plain step keeps fp32 LoRA weights), and the bf16 weights are refreshed from
it with one copy per parameter group.

Flat layout: each group's parameters become views into one flat weight tensor and their `.grad`s views into one
flat gradient tensor (autograd accumulates into an existing `.grad` in place), so zeroing, clipping, the
bf16 → fp32 gradient copy, the optimizer and the fp32 → bf16 weight copy are one kernel (or one fused kernel) per
group. Elementwise optimizers (AdamW, AdamW8bit, Lion, Prodigy's per-element update) compute the same thing on the
flat tensor as on the pieces; Adafactor factors per matrix and so runs per tensor (`flat=False`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class _Group:
    params: list[torch.nn.Parameter]
    weights: torch.Tensor | None  # flat: the parameters' storage (bf16 with master weights, else fp32)
    grads: torch.Tensor | None  # flat: the parameters' .grad storage
    masters: list[torch.Tensor]  # what the inner optimizer updates: [flat fp32] / per-tensor fp32 / [weights]


def flatten_(params: list[torch.nn.Parameter], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Move `params` (in place, same Parameter objects) into one flat tensor of `dtype`, and give them `.grad`s that
    are views into one flat zeroed gradient tensor. Returns (weights, grads)."""
    device = params[0].device
    total = sum(p.numel() for p in params)
    weights = torch.empty(total, dtype=dtype, device=device)
    grads = torch.zeros(total, dtype=dtype, device=device)
    offset = 0
    for p in params:
        n = p.numel()
        weights[offset : offset + n].copy_(p.detach().reshape(-1))
        p.data = weights[offset : offset + n].view(p.shape)
        p.grad = grads[offset : offset + n].view(p.shape)
        offset += n
    return weights, grads


class MasterWeightsOptimizer(torch.optim.Optimizer):
    """Wraps the optimizer the run asked for (`build(param_groups)`), run on fp32 masters and/or flat tensors.

    A `torch.optim.Optimizer` to the outside (LR schedulers check that), without calling its constructor: the inner
    optimizer owns `param_groups` and `state`, as accelerate's AcceleratedOptimizer does it.
    """

    def __init__(self, groups: list[dict], build, *, master: bool, flat: bool, dtype: torch.dtype):
        if not (master or flat):
            raise ValueError("MasterWeightsOptimizer without master weights or flat tensors is the plain optimizer")
        self.master, self.flat = master, flat
        self._groups: list[_Group] = []
        inner_groups = []
        for group in groups:
            params = list(group["params"])
            if flat:
                weights, grads = flatten_(params, dtype if master else torch.float32)
                weights.grad = grads  # for clipping: one norm over the flat gradient
                if master:
                    masters = [weights.detach().float().clone()]
                    masters[0].grad = torch.zeros_like(masters[0])
                else:
                    masters = [weights]  # the flat tensor is itself what the optimizer updates
            else:
                weights = grads = None
                masters = [p.detach().float().clone() for p in params]
                for p in params:
                    p.data = p.data.to(dtype)
            self._groups.append(_Group(params, weights, grads, masters))
            inner_groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": masters})
        self.inner = build(inner_groups)
        self._hooks_for_schedulers()

    def _hooks_for_schedulers(self) -> None:
        # The few attributes torch.optim.Optimizer's constructor would set and that schedulers / hooks read.
        from collections import OrderedDict

        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()

    # The inner optimizer's groups are the ones LR schedulers change.
    @property
    def param_groups(self):
        return self.inner.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.inner.param_groups = value

    @property
    def state(self):
        return self.inner.state

    @state.setter
    def state(self, value):
        self.inner.state = value

    @property
    def defaults(self):
        return self.inner.defaults

    @defaults.setter
    def defaults(self, value):
        self.inner.defaults = value

    def clip_tensors(self) -> list[torch.Tensor]:
        """What gradient clipping should see: the flat weight tensors (their `.grad` is the flat gradient), or the
        parameters themselves without the flat layout."""
        if self.flat:
            return [g.weights for g in self._groups]
        return [p for g in self._groups for p in g.params]

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MasterWeightsOptimizer.step takes no closure")
        for g in self._groups:
            if self.master and self.flat:
                g.masters[0].grad.copy_(g.grads)
            elif self.master:
                for p, m in zip(g.params, g.masters):
                    m.grad = None if p.grad is None else p.grad.float()
        self.inner.step()
        if self.master:
            self._push()
        return None

    @torch.no_grad()
    def _push(self) -> None:
        """fp32 masters → the model's weights."""
        for g in self._groups:
            if self.flat:
                g.weights.copy_(g.masters[0])
            else:
                torch._foreach_copy_(g.params, g.masters)

    def zero_grad(self, set_to_none: bool = True) -> None:
        # The flat gradient must stay where the parameters' .grad views point: zero it, never drop it.
        for g in self._groups:
            if self.flat:
                g.grads.zero_()
            else:
                for p in g.params:
                    p.grad = None

    def full_precision(self) -> dict[int, torch.Tensor]:
        """data_ptr of each parameter → its fp32 master (a view), for saving files at full precision."""
        out = {}
        for g in self._groups:
            if not self.master:
                continue
            if self.flat:
                offset = 0
                for p in g.params:
                    out[p.data_ptr()] = g.masters[0][offset : offset + p.numel()].view(p.shape)
                    offset += p.numel()
            else:
                out.update({p.data_ptr(): m for p, m in zip(g.params, g.masters)})
        return out

    def state_dict(self) -> dict:
        return {
            "inner": self.inner.state_dict(),
            "master": self.master,
            "flat": self.flat,
            "masters": [[m.detach().cpu() for m in g.masters] for g in self._groups] if self.master else None,
        }

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict) -> None:
        if "inner" not in state_dict or state_dict.get("master") != self.master or state_dict.get("flat") != self.flat:
            raise RuntimeError(
                "resume state was written by a different training step (fast_step / fast_step_off "
                "changed); delete the work folder's state/ or use the same settings"
            )
        self.inner.load_state_dict(state_dict["inner"])
        if self.master:
            for g, saved in zip(self._groups, state_dict["masters"]):
                for m, s in zip(g.masters, saved):
                    m.copy_(s)
            self._push()

    def __repr__(self) -> str:
        return f"MasterWeightsOptimizer(master={self.master}, flat={self.flat}, inner={self.inner!r})"
