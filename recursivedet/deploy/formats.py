"""Writing a :class:`~recursivedet.deploy.graph.DeployableDetector` as TorchScript or ONNX, and running the
written files.

Both formats come from one ``torch.jit.trace`` of the graph, whose sizes are shape operations: TorchScript is
that trace; ONNX (opset 17) is converted from it by PyTorch's TorchScript-based exporter, with the image's
height and width as dynamic axes. (The ``torch.export``-based exporter, ``dynamo=True``, gives the same
graph but takes minutes on this model where the trace takes seconds.) The ONNX file runs in onnxruntime,
the package's ``deploy`` extra: ``pip install 'recursivedet[deploy]'``.
"""

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from recursivedet.errors import UserError

FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}
ONNX_OPSET = 17
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["boxes", "scores", "classes"]


class DeployFormatError(UserError, ValueError):
    """A format the export does not write, or a file it cannot run."""


class MissingRuntimeError(UserError, ImportError):
    """An optional package that a format needs is not installed."""


def require_onnxruntime():
    """The ``onnxruntime`` module; :class:`MissingRuntimeError` naming the extra when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingRuntimeError(
            "onnxruntime is not installed: it runs and checks the ONNX model (pip install 'recursivedet[deploy]', "
            "or pip install onnxruntime)"
        ) from None
    return onnxruntime


def _quiet():
    """Warnings of tracing that do not apply to the graph (its Python checks of constant shapes)."""
    context = warnings.catch_warnings()
    context.__enter__()
    warnings.simplefilter("ignore", torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*deprecated.*")
    warnings.filterwarnings("ignore", message="no signature found")
    warnings.filterwarnings("ignore", message=".*[Cc]onstant folding.*")
    warnings.filterwarnings("ignore", message=".*aten::index.*")
    return context


def trace(graph: torch.nn.Module, image: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of the graph on one image (the graph's sizes follow the input's shape)."""
    context = _quiet()
    try:
        with torch.no_grad():
            return torch.jit.trace(graph.eval(), (image,), check_trace=False)
    finally:
        context.__exit__(None, None, None)


def check_format(model: torch.nn.Module, fmt: str) -> None:
    """:class:`DeployFormatError` if ``model`` cannot be written as ``fmt`` (checked for every format before any
    is written)."""
    if fmt not in FORMATS:
        raise DeployFormatError(f"unknown export format {fmt!r}; the export writes {', '.join(FORMATS)}")
    if fmt == "onnx" and model.rego is not None and model.rego.at_inference:
        raise DeployFormatError(
            "ONNX export of a model with REGO is not supported (its attention layers do not convert); export "
            "torchscript, or the model without REGO at inference (model.rego.at_inference=False)"
        )


def write(graph: torch.nn.Module, image: torch.Tensor, fmt: str, path: Path) -> Path:
    """Write the graph traced on ``image`` as ``fmt`` ("torchscript" or "onnx") to ``path``: into a new file of
    a unique name that then replaces ``path`` (never written through a symlink there, never half-written)."""
    check_format(graph.model, fmt)
    traced = trace(graph, image)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _write_traced(traced, image, fmt, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _write_traced(traced, image: torch.Tensor, fmt: str, path: str) -> None:
    if fmt == "torchscript":
        traced.save(path)
        return
    context = _quiet()
    try:
        torch.onnx.export(
            traced,
            (image,),
            path,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={"image": {1: "height", 2: "width"}, **{n: {0: "detections"} for n in OUTPUT_NAMES}},
        )
    finally:
        context.__exit__(None, None, None)


Runner = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def load(path: Path, threads: int | None = None) -> Runner:
    """A function image (3, H, W) float32 -> (boxes, scores, classes) tensors running the written file (the
    format from its suffix). ``threads``: onnxruntime's intra-op threads (default: its own)."""
    path = Path(path)
    if path.suffix == ".ts":
        context = _quiet()
        try:
            module = torch.jit.load(str(path))
        finally:
            context.__exit__(None, None, None)

        def run_torchscript(image):
            with torch.no_grad():
                return tuple(module(image))

        return run_torchscript
    if path.suffix == ".onnx":
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run_onnx(image):
            outputs = session.run(None, {"image": image.detach().cpu().numpy().astype(np.float32)})
            return tuple(torch.from_numpy(o) for o in outputs)

        return run_onnx
    raise DeployFormatError(f"{path} is neither TorchScript (.ts) nor ONNX (.onnx)")
