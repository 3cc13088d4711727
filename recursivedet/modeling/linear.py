"""Fully connected layers whose float32 matrix products on the CPU run on the faster of MKL and oneDNN, as
measured on the machine at hand.

PyTorch sends a float32 ``F.linear`` on the CPU to MKL's sgemm. On some processors MKL takes a generic, slower code
path where oneDNN, which PyTorch also ships and uses for its convolutions, does not; on others MKL is the faster.
The decoder's matrix products are almost all of its work (the dynamic layer alone, 256 -> 32768 per proposal and
pass, is about half), so the first float32 product on the CPU times both on a decoder-sized product and keeps the
faster (:func:`cpu_linear_kernel`, logged once). The choice is remembered per processor, PyTorch version and thread
count in ``~/.cache/recursivedet/cpu_linear.json`` (``$XDG_CACHE_HOME``), so that runs on one machine round alike
(a resumed run continues exactly); ``RECURSIVEDET_CPU_LINEAR=onednn`` or ``mkl`` sets it instead.
``python -m recursivedet.analysis.benchmark --config-file CONFIG`` prints both libraries' large-matrix throughput.
Results equal ``F.linear`` up to float32 rounding on either kernel (the tests check this).

Everything else takes ``F.linear`` (MKL on the CPU): other devices, other dtypes, autocast, TorchScript and tracing (so
that fvcore still counts the FLOPs), ``torch.compile`` and ``torch.export`` (which need a known operator), and
PyTorch builds without oneDNN.
"""

import json
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from recursivedet.errors import UserError
from recursivedet.machine import processor_name

KERNELS = ("onednn", "mkl")
KERNEL_VARIABLE = "RECURSIVEDET_CPU_LINEAR"
logger = logging.getLogger(__name__)


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


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, K) @ weight (N, K)^T + bias on oneDNN, without autograd (for measuring)."""
    return _onednn(x, weight, bias)


def _cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recursivedet" / "cpu_linear.json"


def _machine_key() -> str:
    return f"{processor_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def measure_kernels(rows: int = 1024, features: int = 256, outputs: int = 2048, runs: int = 5) -> dict[str, float]:
    """GFLOP/s of a decoder-sized float32 product (``rows`` x ``features`` -> ``outputs``: tokens through an FFN
    layer) on each kernel: the best of ``runs``, the two kernels alternating so that both see the same load."""
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(rows, features, generator=g), torch.randn(outputs, features, generator=g)
    run = {"onednn": lambda: _onednn(x, weight, None), "mkl": lambda: F.linear(x, weight)}
    best = dict.fromkeys(run, float("inf"))
    with torch.no_grad():
        for _ in range(runs + 1):  # the first round warms both up and counts too: the minimum discards it
            for name, fn in run.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: rows * features * outputs / seconds / 1e9 for name, seconds in best.items()}


def _choose_kernel() -> str:
    forced = os.environ.get(KERNEL_VARIABLE, "auto")
    if forced not in ("auto", *KERNELS):
        raise UserError(f"{KERNEL_VARIABLE}={forced!r}: expected one of auto, {', '.join(KERNELS)}")
    if _ONEDNN_LINEAR is None:
        return "mkl"
    if forced != "auto":
        return forced
    key, path = _machine_key(), _cache_file()
    try:
        remembered = json.loads(path.read_text())
    except (OSError, ValueError):
        remembered = {}
    if not isinstance(remembered, dict):
        remembered = {}
    if remembered.get(key, {}).get("kernel") in KERNELS:
        return remembered[key]["kernel"]
    rates = measure_kernels()
    kernel = max(rates, key=rates.get)
    logger.info(
        "float32 linear layers on the CPU use %s: %s (%s, measured once; %s=onednn|mkl overrides, %s remembers it)",
        "oneDNN" if kernel == "onednn" else "MKL",
        ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in rates.items()),
        key,
        KERNEL_VARIABLE,
        path,
    )
    remembered[key] = {"kernel": kernel, "gflop_per_s": {n: round(r, 1) for n, r in rates.items()}}
    try:  # best effort: a read-only home only means measuring again next time
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(remembered, indent=1))
        partial.replace(path)
    except OSError:
        pass
    return kernel


_KERNEL: str | None = None


def cpu_linear_kernel() -> str:
    """The kernel of this process's float32 CPU products, "onednn" or "mkl" (chosen at the first call)."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _choose_kernel()
    return _KERNEL


def onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN can take these operands here (float32 on the CPU, outside autocast, tracing, scripting,
    compiling and dispatch modes, in a PyTorch build that has it)."""
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
        and _get_current_dispatch_mode() is None  # e.g. FlopCounterMode, which counts aten's products only
    )


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` takes the oneDNN path for these operands: where oneDNN applies and is the faster."""
    return onednn_applies(x, weight) and cpu_linear_kernel() == "onednn"


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
