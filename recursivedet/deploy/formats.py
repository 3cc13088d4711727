"""Writing a host's exportable graph (:class:`~recursivedet.deploy.graph.DetectorGraph`) as TorchScript, an
ExportedProgram (``.pt2``) or ONNX, and running the written files.

- ``pt2``: ``torch.export.export`` of the graph with the image's height and width as dynamic dimensions, saved by
  ``torch.export.save``; runs with ``torch.export.load(path).module()``. The graph capture PyTorch develops.
- ``onnx`` (opset 18): ``torch.onnx.export(..., dynamo=True)`` of that same ExportedProgram; runs in onnxruntime,
  the package's ``deploy`` extra (``pip install 'recursivedet[deploy]'``). Every host converts this way, including
  the attention layers of AdaMixer and REGO, which the TorchScript-based ONNX exporter cannot convert.
- ``torchscript``: ``torch.jit.trace`` of the graph (its sizes are shape operations); for libtorch (C++)
  deployments. PyTorch deprecates ``torch.jit`` (``FutureWarning``): prefer ``pt2``.
"""

import os
import tempfile
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from recursivedet.errors import UserError

FORMATS = {"torchscript": "model.ts", "pt2": "model.pt2", "onnx": "model.onnx"}
ONNX_OPSET = 18
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


def require_onnx_exporter() -> None:
    """:class:`MissingRuntimeError` naming the extra when PyTorch's ONNX exporter lacks its packages (onnx,
    onnxscript)."""
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            raise MissingRuntimeError(
                f"{name} is not installed: PyTorch's ONNX exporter needs it (pip install 'recursivedet[deploy]', "
                f"or pip install {name})"
            ) from None


@contextmanager
def _quiet():
    """Without the warnings of tracing and exporting that do not apply to the graph (its Python checks of constant
    shapes, ``torch.jit``'s deprecation: see the module's docstring)."""
    with warnings.catch_warnings():
        _ignore_export_warnings()
        yield


def _ignore_export_warnings() -> None:
    warnings.simplefilter("ignore", torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*deprecated.*")
    warnings.filterwarnings("ignore", message="no signature found")
    warnings.filterwarnings("ignore", message=".*[Cc]onstant folding.*")
    warnings.filterwarnings("ignore", message=".*aten::index.*")
    # torch.export.save of parameters shared by two module paths (the graph keeps its model's)
    warnings.filterwarnings("ignore", message="No complete tensor found in the group")


def trace(graph: torch.nn.Module, image: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of the graph on one image (the graph's sizes follow the input's shape)."""
    with _quiet(), torch.no_grad():
        return torch.jit.trace(graph.eval(), (image,), check_trace=False)


def check_format(fmt: str) -> None:
    """:class:`DeployFormatError` if ``fmt`` is not a format the export writes."""
    if fmt not in FORMATS:
        raise DeployFormatError(f"unknown export format {fmt!r}; the export writes {', '.join(FORMATS)}")


def export_program(graph: torch.nn.Module, image: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the graph on one (3, H, W) image, with H and W dynamic (``Dim.DYNAMIC``: the
    program checks the sizes it was derived for, e.g. more than the largest stride, where a map of one cell would
    be a special case). Kept on the graph for the next format; :class:`DeployFormatError` when it fails."""
    kept = getattr(graph, "_exported", None)
    if kept is not None and kept[0] == tuple(image.shape):
        return kept[1]
    minimum = max(graph.model.strides) + 1
    if min(image.shape[-2:]) < minimum:
        raise DeployFormatError(
            f"the image the model is exported on is {image.shape[-2]}x{image.shape[-1]}; it needs at least "
            f"{minimum} pixels a side"
        )
    dims = {1: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC}
    try:
        with _quiet(), torch.no_grad():
            program = torch.export.export(graph.eval(), (image,), dynamic_shapes={"image": dims})
    except Exception as e:  # torch's own errors span pages: their first line, and the graph that failed
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DeployFormatError(f"torch.export could not capture the {type(graph).__name__}: {first}") from e
    graph._exported = (tuple(image.shape), program)
    return program


def write(graph: torch.nn.Module, image: torch.Tensor, fmt: str, path: Path) -> Path:
    """Write the graph captured on ``image`` as ``fmt`` (see :data:`FORMATS`) to ``path``: into a new file of a
    unique name that then replaces ``path`` (never written through a symlink there, never half-written)."""
    check_format(fmt)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _write(graph, image, fmt, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _write(graph, image: torch.Tensor, fmt: str, path: str) -> None:
    if fmt == "torchscript":
        trace(graph, image).save(path)
        return
    program = export_program(graph, image)
    with _quiet():
        if fmt == "pt2":
            torch.export.save(program, path)
            return
        with torch.no_grad():  # the conversion re-traces the program: under autograd, attention does not convert
            _onnx_export(program, image, path)


def _onnx_export(program: torch.export.ExportedProgram, image: torch.Tensor, path: str) -> None:
    torch.onnx.export(
        program,
        (image,),
        path,
        dynamo=True,
        opset_version=ONNX_OPSET,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        external_data=False,  # the weights inside the one file (below ONNX's 2 GB limit)
        verbose=False,
    )


Runner = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def load(path: Path, threads: int | None = None) -> Runner:
    """A function image (3, H, W) float32 -> (boxes, scores, classes) tensors running the written file (the
    format from its suffix). ``threads``: onnxruntime's intra-op threads (default: its own)."""
    path = Path(path)
    import torchvision  # noqa: F401  (registers torchvision::nms, which DiffusionDet's graph calls)

    if path.suffix == ".ts":
        with _quiet():
            module = torch.jit.load(str(path))

        def run_torchscript(image):
            with torch.no_grad():
                return tuple(module(image))

        return run_torchscript
    if path.suffix == ".pt2":
        with _quiet():
            program = torch.export.load(str(path)).module()

        def run_program(image):
            with torch.no_grad():
                return tuple(program(image))

        return run_program
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
    raise DeployFormatError(f"{path} is neither TorchScript (.ts), an ExportedProgram (.pt2) nor ONNX (.onnx)")
