"""Layer-wise relevance propagation (method 'lrp'): zennit's composites as backward rules.

zennit (an optional dependency: ``pip install 'seg_xai_fast[lrp]'``) writes each LRP rule as a
backward hook on the module it applies to; inside a composite's context the input gradient of a
target is its relevance. The attribution runner (engine/attributions.py) runs one forward inside the
context and pulls every class back through it (the class VJPs; zennit's hooks keep no state between
backward passes of one forward), the initial relevance of class k being its target's output,
R_k(p) = M_k(p)·logit_k(p), so that Σ R_k(input) ≈ S_k (conservation). Modules no rule maps
(upsampling, concatenation, additions of a U-Net's skips) pass relevance on as their gradient, as
in zennit. Batch norm is merged into the convolution before it by zennit's SequentialMergeBatchNorm
canonizer (canonizer="merge_batchnorm"), in place for the call and restored after it.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager

#: The zennit composites served (LRP rule sets; zennit's other composites are not LRP).
LRP_COMPOSITES = ("epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat",
                  "epsilon_gamma_box")
#: The canonizers: batch norm merged into the convolution before it, or none.
LRP_CANONIZERS = ("merge_batchnorm", "none")


def zennit_composites():
    """zennit's composites by name, or an ImportError naming the extra that installs it."""
    try:
        from zennit.composites import COMPOSITES
    except ImportError:
        raise ImportError("method 'lrp' needs zennit for its rules, which is not installed: "
                          "pip install 'seg_xai_fast[lrp]' (or pip install zennit)") from None
    return COMPOSITES


def make_composite(options: dict):
    """The zennit composite of options["composite"] with the options it takes (epsilon, gamma, low,
    high) and the canonizer."""
    composites = zennit_composites()
    from zennit.canonizers import SequentialMergeBatchNorm

    cls = composites[options["composite"]]
    takes = inspect.signature(cls).parameters
    kwargs = {key: options[key] for key in ("epsilon", "gamma", "low", "high") if key in takes}
    canonizers = [SequentialMergeBatchNorm()] if options["canonizer"] == "merge_batchnorm" else []
    return cls(canonizers=canonizers, **kwargs)


def lrp_rules(options: dict):
    """rules(model) for a Plan: a context manager inside which the model's backward pass is the
    composite's relevance propagation (zennit registers and removes its hooks and canonizers)."""
    zennit_composites()  # the missing extra is an error before any forward

    @contextmanager
    def rules(model):
        with make_composite(options).context(model):
            yield
    return rules


__all__ = ["LRP_CANONIZERS", "LRP_COMPOSITES", "lrp_rules", "make_composite", "zennit_composites"]
