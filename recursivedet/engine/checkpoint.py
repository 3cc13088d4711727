"""Checkpoints that are never half-written, loading that never runs code stored in a file, and errors that
name the file.

Every checkpoint a user hands us (``train.init_checkpoint``, ``--resume``, ``--eval-only``, export, the
converter) is read without executing anything it contains: ``.pth``/``.pyth`` files with
``torch.load(weights_only=True)``, detectron2 / Caffe2 model-zoo ``.pkl`` files with an unpickler that only
rebuilds numpy arrays. A file that needs more is refused with a :class:`CheckpointError` that says so.
"""

import os
import pickle
import re
import sys
import tempfile
import warnings
from collections import OrderedDict
from urllib.parse import urlparse

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager
from fvcore.common.checkpoint import PeriodicCheckpointer

from recursivedet.errors import UserError
from recursivedet.modeling.backbone.timm_backbone import backbone_checkpoint

from .finetune import skipped_tensors_message

__all__ = ["CheckpointError", "Checkpointer", "atomic_write", "load_checkpoint", "load_weights"]


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read, written or does not fit the model."""


# Suffix of the temporary file of atomic_write: what a killed save leaves behind.
_TMP_SUFFIX = ".tmp"
# Such files of a checkpoint or of last_checkpoint: NAME.<random>.tmp (NAME.tmp from earlier versions).
_INTERRUPTED_SAVE = re.compile(r"(last_checkpoint|.+\.pth)(\.[A-Za-z0-9_]+)?\.tmp")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it over ``path``:
    a reader (or a restart after a crash) sees the old file or the complete new one, never a partial one.
    Paths of other storage (``scheme://...``, handled by iopath's PathManager) have no rename: they are
    written directly."""
    if "://" in path and not path.startswith("file://"):
        with PathManager.open(path, "wb") as f:
            write(f)
        return
    # A new file of a unique name (O_EXCL): never a file of another process, never through a symlink. The
    # rename replaces a symlink at ``path`` itself rather than writing to its target.
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{name}.", suffix=_TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make the result private, unlike open()'s files
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the data
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ---- reading files without running their code -------------------------------------------------------------

# The first bytes of torch.save's legacy (non-zip) format: its magic number, pickled with protocol 2.
_LEGACY_TORCH_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:-1]
_ZIP_HEAD = b"PK\x03\x04"


def _not_a_file_error(path: str, named_by: str = "") -> CheckpointError:
    """The error for a checkpoint path that is a directory or does not exist."""
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith((".pth", ".pkl")))
        example = "model_final.pth" if "model_final.pth" in files else (files[-1] if files else "")
        hint = f": give a checkpoint file in it, e.g. {os.path.join(path, example)}" if example else " (no .pth in it)"
        return CheckpointError(f"checkpoint {path}{named_by} is a directory, not a checkpoint file{hint}")
    return CheckpointError(f"checkpoint file {path}{named_by} does not exist")


def _unsafe_globals(path: str, head: bytes, error: Exception) -> list[str]:
    """The Python objects (``module.name``) that kept ``torch.load(weights_only=True)`` from reading
    ``path``; empty when the file is damaged rather than holding such objects."""
    names = []
    if head.startswith(_ZIP_HEAD) and hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        try:  # reads the pickle opcodes only
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            return []
    else:  # the legacy format (and PyTorch < 2.5) only names the first refused object, in its message
        names = re.findall(r"(?:GLOBAL|Unsupported class) ([\w.]+)", str(error))[:1]
    return sorted(name for name in names if not _garbled_name(name))


def _garbled_name(name: str) -> bool:
    """A name of an imported module that has no such attribute, e.g. ``torch._utils._rebui`` read from a
    truncated file. Nothing is imported to find out."""
    module, _, attribute = name.rpartition(".")
    return module in sys.modules and not hasattr(sys.modules[module], attribute)


def _explain_load_failure(path: str, error: Exception) -> CheckpointError:
    """Why ``torch.load(path, weights_only=True)`` failed, in words for the user."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_TORCH_HEAD))
    except OSError as e:
        return CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}")
    if size == 0:
        return CheckpointError(f"cannot read checkpoint {path}: the file is empty")
    unsafe = _unsafe_globals(path, head, error)
    if unsafe:
        return CheckpointError(
            f"cannot read checkpoint {path}: the file contains Python objects other than tensors "
            f"({', '.join(unsafe)}); they are not loaded, since unpickling them can run arbitrary code. "
            "If you trust the file, load it yourself and save its state dict of tensors with torch.save"
        )
    if head.startswith(_ZIP_HEAD):
        return CheckpointError(
            f"cannot read checkpoint {path}: the PyTorch checkpoint is corrupt (truncated or damaged, e.g. by an "
            f"interrupted copy; {size} bytes)"
        )
    if head.startswith(_LEGACY_TORCH_HEAD):
        return CheckpointError(
            f"cannot read checkpoint {path}: the PyTorch checkpoint (legacy format) is corrupt "
            f"(truncated or damaged; {size} bytes)"
        )
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return CheckpointError(
            f"cannot read checkpoint {path}: a plain Python pickle, not a PyTorch checkpoint (torch.save); "
            "it is not unpickled, since that can run arbitrary code"
        )
    return CheckpointError(
        f"cannot read checkpoint {path}: not a PyTorch checkpoint (the file is corrupt or of another kind; "
        f"{size} bytes)"
    )


def load_checkpoint(path: str):
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only, nothing in the
    file is executed. A missing, unreadable or unsafe file raises :class:`CheckpointError` naming it."""
    if not os.path.isfile(path):
        raise _not_a_file_error(path)
    try:
        with warnings.catch_warnings():
            # torch's note on a pickle protocol it may not read: the error below says what the file is
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _explain_load_failure(path, e) from e


class _RefusedObject(pickle.UnpicklingError):
    """A pickle asks for an object that :class:`_ArrayUnpickler` does not rebuild."""


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes``, for the latin-1 encoding only."""
    if encoding not in ("latin1", "latin-1"):
        raise _RefusedObject(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# The only globals a model-zoo pickle of numpy arrays needs, spelled as numpy 1.x and 2.x write them. The
# functions are taken from numpy's own pickling, not imported by the names found in the file.
_ARRAY_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_ARRAY_SCALAR = np.float32(0).__reduce__()[0]
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _ARRAY_SCALAR,
    ("numpy._core.multiarray", "scalar"): _ARRAY_SCALAR,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _latin1_bytes,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings, numbers and numpy arrays; refuses every other object."""

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedObject(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _RefusedObject(f"persistent id {pid!r}")


def load_array_pickle(path: str):
    """A pickle of numpy arrays in (nested) dicts, as detectron2's and Caffe2's model zoos publish (Python 2
    pickles included); any other object is refused with :class:`CheckpointError`, without executing it."""
    if not os.path.isfile(path):
        raise _not_a_file_error(path)
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except _RefusedObject as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file contains Python objects other than numpy arrays ({e}); they "
            "are not loaded, since unpickling them can run arbitrary code"
        ) from e
    except Exception as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a pickle of numpy arrays (the file is corrupt or of another "
            f"kind; {os.path.getsize(path)} bytes)"
        ) from e


# ---- the checkpointer ---------------------------------------------------------------------------------------


class Checkpointer(DetectionCheckpointer):
    """detectron2's checkpointer with atomic saves (the ``.pth`` file and ``last_checkpoint``), loading that
    runs no code from the file (see the module docstring) and clear errors: a missing, unreadable or unsafe
    file, and with ``strict=True`` (resume, evaluation) any model parameter missing from the checkpoint or
    of another shape, raise :class:`CheckpointError` naming the file. With ``strict=False`` (initialisation,
    e.g. an ImageNet backbone) only a checkpoint sharing no parameter with the model is an error.

    At the start of training (:meth:`resume_or_load`) it removes what killed saves left in ``save_dir``
    and, when resuming, tells the trainer's periodic checkpointer which checkpoints earlier runs wrote, so
    that its ``max_to_keep`` counts them too."""

    def __init__(self, model, save_dir: str = "", *, strict: bool = True, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.strict = strict
        self._loading = None

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        try:
            atomic_write(save_file, lambda f: torch.save(data, f))
        except OSError as e:
            raise CheckpointError(
                f"could not write the checkpoint {save_file}: {os.strerror(e.errno) if e.errno else e}; "
                f"{self.save_dir} keeps its earlier checkpoints"
            ) from None
        except RuntimeError as e:  # torch.save's own writer reports a failed write (e.g. a full disk) so
            if "inline_container" not in str(e) and "PytorchStreamWriter" not in str(e):
                raise
            raise CheckpointError(
                f"could not write the checkpoint {save_file} (is the disk full?); {self.save_dir} keeps its earlier "
                "checkpoints"
            ) from None
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename.encode()))

    def get_checkpoint_file(self) -> str:
        """The checkpoint named by ``save_dir/last_checkpoint`` ("" if the file vanished meanwhile); an
        unreadable ``last_checkpoint`` raises :class:`CheckpointError` saying how to go on."""
        save_file = os.path.join(self.save_dir, "last_checkpoint")
        try:
            with self.path_manager.open(save_file, "rb") as f:
                raw = f.read()
        except OSError:
            return ""  # deleted by another process between has_checkpoint() and here, as fvcore allows
        try:
            name = raw.decode().strip()
        except UnicodeDecodeError:
            name = ""
        if not name or not name.isprintable():
            raise CheckpointError(
                f"the last_checkpoint file in {self.save_dir} is unreadable (corrupt): it must hold the name of "
                "the latest checkpoint in that folder, e.g. model_0004999.pth. Write that name into it, or delete "
                "it to start from train.init_checkpoint instead (--resume then finds no checkpoint)"
            )
        return os.path.join(self.save_dir, name)

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        """fvcore's ``resume_or_load``, which starts a training run: first remove leftovers of killed saves;
        with ``resume`` and no checkpoint in ``save_dir``, say so (training then starts from ``path``)."""
        self._remove_interrupted_saves()
        resuming = resume and self.has_checkpoint()
        if resume and not resuming:
            start = f"from train.init_checkpoint {path}" if path else "from scratch (train.init_checkpoint is empty)"
            self.logger.warning(
                f"--resume: no checkpoint found in {self.save_dir} (no last_checkpoint file); training starts {start}"
            )
        extra = super().resume_or_load(path, resume=resume)
        if resuming:
            self._adopt_earlier_checkpoints(extra.get("iteration"))
        return extra

    def _writes_here(self) -> bool:
        return bool(self.save_dir) and self.save_to_disk and "://" not in self.save_dir and os.path.isdir(self.save_dir)

    def _remove_interrupted_saves(self) -> None:
        """Delete the temporary files of :func:`atomic_write` that a killed save left in ``save_dir``. Done
        when training starts, not when a Checkpointer is created: another process reading the folder must
        not delete the temporary file of a save in progress."""
        if not self._writes_here():
            return
        for name in sorted(os.listdir(self.save_dir)):
            if _INTERRUPTED_SAVE.fullmatch(name):
                tmp = os.path.join(self.save_dir, name)
                if os.path.isfile(tmp):
                    self.logger.info(f"Removing {tmp}, left by an interrupted save")
                    os.remove(tmp)

    def _adopt_earlier_checkpoints(self, iteration) -> None:
        """Give the trainer's periodic checkpointer (its hook) the periodic checkpoints already in
        ``save_dir`` up to the resumed ``iteration``, oldest first, so that ``max_to_keep`` holds across
        restarts (fvcore only counts the files its own process saved). Checkpoints beyond the limit are
        deleted now. Only ``<prefix>_<7 digits>.pth`` files count: never ``<prefix>_final.pth`` or others."""
        trainer = self.checkpointables.get("trainer")
        if not self._writes_here() or trainer is None:
            return
        for hook in getattr(trainer, "_hooks", ()):
            if not isinstance(hook, PeriodicCheckpointer) or hook.checkpointer is not self:
                continue
            pattern = re.compile(rf"{re.escape(hook.file_prefix)}_(\d{{7}})\.pth")
            found = []
            for name in os.listdir(self.save_dir):
                match = pattern.fullmatch(name)
                # later files can only be from a run killed before it tagged them: this run rewrites them
                if match and (iteration is None or int(match.group(1)) <= int(iteration)):
                    found.append((int(match.group(1)), os.path.join(self.save_dir, name)))
            earlier = [file for _, file in sorted(found)]
            if hook.max_to_keep is not None:
                excess = max(0, len(earlier) - hook.max_to_keep)
                for file in earlier[:excess]:
                    self.logger.info(f"Removing {file}: more than max_to_keep={hook.max_to_keep} checkpoints")
                    os.remove(file)
                earlier = earlier[excess:]
            hook.recent_checkpoints = earlier + [f for f in hook.recent_checkpoints if f not in earlier]

    def load(self, path: str, *args, **kwargs):
        if path and "://" not in path and not os.path.isfile(path) and not os.path.isfile(_without_query(path)):
            raise _not_a_file_error(path, " (named by last_checkpoint)" if self._named_by_last(path) else "")
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = None

    def _named_by_last(self, path: str) -> bool:
        try:
            return bool(self.save_dir) and self.has_checkpoint() and path == self.get_checkpoint_file()
        except CheckpointError:
            return False

    def _load_file(self, filename: str):
        try:
            if filename.endswith(".pkl"):
                return self._load_model_zoo_pickle(filename)
            if filename.endswith(".pyth"):
                return self._load_pycls(filename)
            # detectron2: adds {"model": ...} around a bare state dict and reads "?matching_heuristics=True"
            return super()._load_file(filename)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"cannot read checkpoint {filename}: {type(e).__name__}: {e}") from e

    def _torch_load(self, f: str):
        data = load_checkpoint(f)
        if not isinstance(data, dict):
            raise CheckpointError(f"checkpoint {f} holds no dict of weights but a {type(data).__name__}")
        return data

    def _load_model_zoo_pickle(self, filename: str) -> dict:
        """A detectron2 model-zoo pickle ({"model": arrays, "__author__": ...}) as it is, a Caffe2 /
        Detectron1 one (arrays, under "blobs" for detection models) as weights to match by name."""
        data = load_array_pickle(filename)
        if not isinstance(data, dict):
            raise CheckpointError(f"checkpoint {filename} holds no dict of weights but a {type(data).__name__}")
        if "model" in data and "__author__" in data:
            self.logger.info(f"Reading a file from '{data['__author__']}'")
            return data
        blobs = data.get("blobs", data)
        # optimizer momenta of Caffe2 training, not weights
        weights = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}

    def _load_pycls(self, filename: str) -> dict:
        """A pycls checkpoint (the only ``.pyth`` files): its "model_state", weights matched by name."""
        data = load_checkpoint(filename)
        if not isinstance(data, dict) or not isinstance(data.get("model_state"), dict):
            raise CheckpointError(f"checkpoint {filename} (.pyth) holds no 'model_state' of a pycls checkpoint")
        weights = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
        return {"model": weights, "__author__": "pycls", "matching_heuristics": True}

    def _load_model(self, checkpoint):
        state = checkpoint.get("model")
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {self._loading} holds no model state dict")
        not_weights = [k for k, v in state.items() if not isinstance(v, torch.Tensor | np.ndarray)]
        if not_weights:
            raise CheckpointError(
                f"checkpoint {self._loading} holds model entries that are no tensors: {_some(not_weights)}"
            )
        official = any(k.startswith("head.") for k in state)
        if not self.strict and (backbone := backbone_checkpoint(self.model, state)) is not None:
            checkpoint["model"], dropped, where = backbone
            self.logger.info(
                f"{self._loading} holds the ImageNet weights of the model's timm backbone: loaded into {where} "
                f"({len(checkpoint['model'])} tensors; left out {len(dropped)}: {_some(dropped, 6)})"
            )
        incompatible = super()._load_model(checkpoint)
        num_model_keys = len(self.model.state_dict())
        # fvcore leaves tensors of another shape out of the load, so they come back as missing too: name them once
        reshaped = {k for k, _, _ in incompatible.incorrect_shapes}
        missing = [k for k in incompatible.missing_keys if k not in reshaped]
        problems = []
        for what, keys in [
            ("with another shape", [f"{k} {a}->{b}" for k, a, b in incompatible.incorrect_shapes]),
            ("missing", missing),
            ("unexpected", incompatible.unexpected_keys),
        ]:
            if keys:
                problems.append(f"{len(keys)} {what} ({_some(keys)})")
        loaded = num_model_keys - len(missing) - len(incompatible.incorrect_shapes)
        if (self.strict and problems) or loaded <= 0:
            hint = " (an official checkpoint? convert it: python -m recursivedet.convert)" if official else ""
            raise CheckpointError(
                f"checkpoint {self._loading} does not fit the model ({num_model_keys} entries): "
                + "; ".join(problems or ["nothing loaded"])
                + hint
            )
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        """fvcore's report, with the tensors of another shape (e.g. class layers when fine-tuning to another
        class count, see :mod:`recursivedet.engine.finetune`) in one line instead of one warning each."""
        if incompatible.incorrect_shapes:
            self.logger.warning(skipped_tensors_message(self._loading, incompatible.incorrect_shapes))
        super()._log_incompatible_keys(incompatible._replace(incorrect_shapes=[]))


def _without_query(path: str) -> str:
    """``path`` without detectron2's ``?matching_heuristics=True`` style query."""
    return urlparse(path)._replace(query="").geturl()


def _some(items, n: int = 3) -> str:
    items = list(items)
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (", ..." if len(items) > n else "")


def load_weights(model, path: str, *, strict: bool = True) -> None:
    """Load model weights only (evaluation, export, initialisation)."""
    Checkpointer(model, strict=strict).load(path, checkpointables=[])
