"""Fully connected layers that run their float32 matrix products on oneDNN on the CPU.

PyTorch sends a float32 ``F.linear`` on the CPU to MKL's sgemm, which takes a generic, slower code path on AMD
processors; oneDNN, which PyTorch also ships and already uses for its convolutions, does not. The decoder's matrix
products are almost all of its work (the dynamic layer alone, 256 -> 32768 per proposal and pass, is about half),
so its linear layers call oneDNN directly. ``python -m recursivedet.analysis.benchmark --config-file CONFIG``
prints both libraries' large-matrix throughput on the machine at hand. Results equal ``F.linear`` up to float32
rounding (the tests check this).

Everything else takes ``F.linear``: other devices, other dtypes, autocast, TorchScript and tracing (so
that fvcore still counts the FLOPs), ``torch.compile`` and ``torch.export`` (which need a known operator), and
PyTorch builds without oneDNN.
"""

import torch
from torch import nn
from torch.nn import functional as F


def _onednn_op():
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):  # a build without the op
        return None


_ONEDNN_LINEAR = _onednn_op()


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (M, K) @ weight (N, K)^T + bias; any strides (oneDNN reads transposed views directly)."""
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """Forward and both backward products on oneDNN (the backward ones are linear layers too)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable  # no double backward: fail loudly, never silently
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = _onednn(grad, weight.t(), None) if need_x else None  # dY W
        grad_weight = _onednn(grad.t(), x.t(), None) if need_weight else None  # dY^T X
        grad_bias = grad.sum(0) if ctx.has_bias and need_bias else None
        return grad_x, grad_weight, grad_bias


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # PyTorch < 2.4
        return torch.is_autocast_cpu_enabled()


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` takes the oneDNN path for these operands."""
    return (
        _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() > 0
        and not _cpu_autocast()
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, on oneDNN where :func:`uses_onednn` allows."""
    if not uses_onednn(x, weight):
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1])
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    out = _OneDNNLinear.apply(flat, weight, bias) if needs_grad else _onednn(flat, weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) whose forward is :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
