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

import threading
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


# --- DeepLIFT's rescale rule (captum's DeepLift)

import torch.nn as nn  # noqa: E402

#: The modules whose backward DeepLIFT's rescale rule replaces (captum's SUPPORTED_NON_LINEAR,
#: Softmax aside): element-wise non-linearities and max pooling.
RESCALED = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus)
MAX_POOLS = {nn.MaxPool1d: (F.max_pool1d, F.max_unpool1d), nn.MaxPool2d: (F.max_pool2d, F.max_unpool2d),
             nn.MaxPool3d: (F.max_pool3d, F.max_unpool3d)}
#: Non-linear modules the rescale rule does not define a multiplier for (captum gives them their
#: plain gradient without a word; DeepLIFT is then not what it computes): refused.
UNDEFINED = (nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.SiLU, nn.Mish, nn.PReLU, nn.ReLU6, nn.Hardtanh, nn.SELU,
             nn.CELU, nn.RReLU, nn.GLU, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink,
             nn.Threshold, nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d, nn.AdaptiveMaxPool1d,
             nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.MultiheadAttention,
             # normalisations by the input's own statistics (eval-mode batch norm is affine: served)
             nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm,
             nn.LocalResponseNorm)
#: Functional non-linearities: called outside the modules above, DeepLIFT cannot rescale them.
_FUNCTIONAL = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu_, F.gelu, F.silu,
               F.hardswish, F.hardsigmoid, F.elu, F.leaky_relu, F.softplus, torch.sigmoid, torch.Tensor.sigmoid,
               torch.tanh, torch.Tensor.tanh, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.softmax, torch.softmax,
               F.mish, F.prelu, F.relu6, F.hardtanh}

DEEPLIFT_EPS = 1e-10  # captum's: |Δin| below it takes the plain gradient
_INSIDE = threading.local()  # .rule: a rule's own computation runs (its functional calls are ours)


def check_deeplift_model(model: nn.Module) -> None:
    """ValueError naming the first module whose non-linearity the rescale rule does not define."""
    for name, module in model.named_modules():
        if isinstance(module, UNDEFINED):
            raise ValueError(
                f"method 'deeplift' (the rescale rule) defines multipliers for {', '.join(t.__name__ for t in RESCALED)} "
                f"and MaxPool modules; module {name!r} is {type(module).__name__}, for which it does not (captum's "
                "DeepLift gives it its plain gradient, which is not DeepLIFT): use 'integratedgradients' or "
                "'inputxgradient' for this model")


class _Rule(torch.autograd.Function):
    """y forwards as it is (computed by `module` from x); x and y kept for a rule's backward."""

    @staticmethod
    def forward(ctx, x, y, module):
        ctx.module = module
        ctx.save_for_backward(x, y)
        return y.clone()


class _Rescale(_Rule):
    """y = f(x) forwards (given; f = module.forward); backwards g·Δy/Δx where |Δx| ≥ eps, else
    g·f'(x), Δ between the two halves of the batch (inputs; baselines), the same multiplier for
    both halves. f'(x) is formed only where some |Δx| < eps needs it."""

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        (x1, x0), (y1, y0) = x.chunk(2), y.chunk(2)
        dx, dy = torch.cat([x1 - x0] * 2), torch.cat([y1 - y0] * 2)
        flat = dx.abs() < DEEPLIFT_EPS
        out = g * dy / torch.where(flat, torch.ones_like(dx), dx)
        if bool(flat.any()):
            _INSIDE.rule = True
            try:
                with torch.enable_grad():  # f'(x) of the element-wise f: the gradient of Σ f(x)
                    xx = x.detach().clone().requires_grad_(True)
                    (slope,) = torch.autograd.grad(ctx.module.forward(xx.clone()).sum(), xx)
            finally:
                _INSIDE.rule = False
            out = torch.where(flat, g * slope, out)
        return out, None, None


class _MaxPoolRescale(_Rule):
    """captum's DeepLIFT rule for max pooling (attr/_core/deep_lift.py's maxpool), written out."""

    @staticmethod
    def backward(ctx, g):
        _INSIDE.rule = True
        try:
            return _MaxPoolRescale.rule(ctx, g)
        finally:
            _INSIDE.rule = False

    @staticmethod
    def rule(ctx, g):
        x, y = ctx.saved_tensors
        m = ctx.module
        pool, unpool = MAX_POOLS[type(m)]
        with torch.no_grad():
            x1, x0 = x.chunk(2)
            y1, y0 = y.chunk(2)
            dx = torch.cat([x1 - x0] * 2)
            top = torch.max(y1, y0)
            dy = torch.cat([top - y0, y1 - top])
            _, indices = pool(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)
            size = list(x.shape)
            a, b = unpool(g * dy, indices, m.kernel_size, m.stride, m.padding, size).chunk(2)
        with torch.enable_grad():  # the pooling's own gradient (overlapping windows add up)
            xx = x.detach().requires_grad_(True)
            (plain,) = torch.autograd.grad(pool(xx, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode), xx, g)
        with torch.no_grad():
            return torch.where(dx.abs() < DEEPLIFT_EPS, plain, torch.cat([a + b] * 2) / dx), None, None


class _NoFunctional(TorchFunctionMode):
    """Refuses a functional non-linearity called outside the rescaled modules' own forwards."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.depth == 0 and func in _FUNCTIONAL and not getattr(_INSIDE, "rule", False):
            raise ValueError(f"method 'deeplift' rescales non-linear modules (nn.ReLU, nn.MaxPool2d, …); the model "
                             f"calls {getattr(func, '__name__', func)} as a function, whose multiplier cannot be "
                             "rescaled: use nn modules for it, or 'integratedgradients'")
        return func(*args, **(kwargs or {}))


def deeplift_rules():
    """rules(model) for DeepLIFT: the rescaled modules' outputs carry the rescale rule backwards
    (forward hooks, removed on exit); a non-linearity the rule does not define is refused."""

    @contextmanager
    def rules(model):
        check_deeplift_model(model)
        mode = _NoFunctional()
        kept: dict = {}
        handles = []

        def pre(module, args):
            # the module runs on a copy, so an in-place ReLU leaves its input — on the graph — intact
            mode.depth += 1
            kept.setdefault(module, []).append(args[0])
            return (args[0].clone(),) + tuple(args[1:])

        def post(module, args, output):
            x = kept[module].pop()
            try:
                rule = _MaxPoolRescale if isinstance(module, tuple(MAX_POOLS)) else _Rescale
                return rule.apply(x, output.detach(), module)
            finally:
                mode.depth -= 1

        try:
            for module in model.modules():
                if isinstance(module, RESCALED + tuple(MAX_POOLS)):
                    handles.append(module.register_forward_pre_hook(pre))
                    handles.append(module.register_forward_hook(post))
            with mode:
                yield
        finally:
            for handle in handles:
                handle.remove()
    return rules


__all__ = ["DEEPLIFT_EPS", "RELU_RULES", "check_deeplift_model", "deeplift_rules", "relu_rule"]
