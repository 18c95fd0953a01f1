"""Backward rules for the attribution methods that change how the gradient flows through ReLUs:
guided backpropagation and deconvolution (captum's GuidedBackprop and Deconvolution).

    guided:  ∂out/∂in ← relu(g · [x > 0])     (the ReLU's gradient, its negative part dropped)
    deconv:  ∂out/∂in ← relu(g)               (the forward mask ignored)

with g the gradient arriving at the ReLU's output. The rules live in a torch function mode for the
duration of a call: every ReLU the forward computes — nn.ReLU (in-place or not), F.relu, F.relu_,
torch.relu, torch.relu_, Tensor.relu, Tensor.relu_ — runs as an autograd function with the rule as
its backward. Nothing of the model is changed (no hook, no attribute), so it is left as found
whatever happens. captum reaches nn.ReLU modules only (backward hooks); on a model whose ReLUs are
all modules both agree, and where a model calls F.relu captum leaves that ReLU's gradient as it is
while the rule here applies to it too.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

#: The rules: which part of the gradient passes a ReLU backwards.
RELU_RULES = ("guided", "deconv")


class _RuleReLU(torch.autograd.Function):
    """relu(x) forwards, the rule backwards; in place (relu_) when asked, as autograd allows it."""

    @staticmethod
    def forward(ctx, x, rule: str, inplace: bool):
        out = x.relu_() if inplace else x.relu()
        if inplace:
            ctx.mark_dirty(x)
        ctx.rule = rule
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        if ctx.rule == "deconv":
            return g.clamp_min(0), None, None
        return (g * (out > 0)).clamp_min(0), None, None


_INPLACE = {torch.relu_, torch.Tensor.relu_, F.relu_}
_PLAIN = {torch.relu, torch.Tensor.relu}


class _ReluRuleMode(TorchFunctionMode):
    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.relu:
            x = args[0] if args else kwargs["input"]
            inplace = bool(args[1]) if len(args) > 1 else bool(kwargs.get("inplace", False))
            return _RuleReLU.apply(x, self.rule, inplace)
        if func in _PLAIN or func in _INPLACE:
            return _RuleReLU.apply(args[0], self.rule, func in _INPLACE)
        return func(*args, **kwargs)


def relu_rule(rule: str):
    """rules(model) for a Plan: a context manager inside which every ReLU has `rule`'s backward."""
    if rule not in RELU_RULES:
        raise ValueError(f"rule must be one of {RELU_RULES}, got {rule!r}")

    @contextmanager
    def rules(model):
        with _ReluRuleMode(rule):
            yield
    return rules


__all__ = ["RELU_RULES", "relu_rule"]
