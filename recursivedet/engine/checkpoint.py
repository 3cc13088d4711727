"""Checkpoints that are never half-written, and loading errors that name the file."""

import os

import torch
from detectron2.checkpoint import DetectionCheckpointer

from recursivedet.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def atomic_write(path: str, write) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it over ``path``:
    a reader (or a restart after a crash) sees the old file or the complete new one, never a partial one."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the data
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class Checkpointer(DetectionCheckpointer):
    """detectron2's checkpointer with atomic saves (the ``.pth`` file and ``last_checkpoint``) and clear
    errors: a missing or unreadable file, and with ``strict=True`` (resume, evaluation) any model parameter
    missing from the checkpoint or of another shape, raise :class:`CheckpointError` naming the file.
    With ``strict=False`` (initialisation, e.g. an ImageNet backbone) only a checkpoint sharing no
    parameter with the model is an error."""

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
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename.encode()))

    def load(self, path: str, *args, **kwargs):
        if path and "://" not in path and not os.path.isfile(path):
            named = self.save_dir and self.has_checkpoint() and path == self.get_checkpoint_file()
            where = " (named by last_checkpoint)" if named else ""
            raise CheckpointError(f"checkpoint file {path}{where} does not exist")
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = None

    def _load_file(self, filename: str):
        try:
            return super()._load_file(filename)
        except Exception as e:
            raise CheckpointError(f"cannot read checkpoint {filename}: {type(e).__name__}: {e}") from e

    def _load_model(self, checkpoint):
        state = checkpoint.get("model")
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {self._loading} holds no model state dict")
        official = any(k.startswith("head.") for k in state)
        incompatible = super()._load_model(checkpoint)
        num_model_keys = len(self.model.state_dict())
        problems = []
        for what, keys in [
            ("with another shape", [f"{k} {a}->{b}" for k, a, b in incompatible.incorrect_shapes]),
            ("missing", incompatible.missing_keys),
            ("unexpected", incompatible.unexpected_keys),
        ]:
            if keys:
                problems.append(f"{len(keys)} {what} ({_some(keys)})")
        loaded = num_model_keys - len(incompatible.missing_keys) - len(incompatible.incorrect_shapes)
        if (self.strict and problems) or loaded <= 0:
            hint = (
                " (an official checkpoint? convert it: python -m recursivedet.checkpoint.convert)" if official else ""
            )
            raise CheckpointError(
                f"checkpoint {self._loading} does not fit the model ({num_model_keys} entries): "
                + "; ".join(problems or ["nothing loaded"])
                + hint
            )
        return incompatible


def _some(items, n: int = 3) -> str:
    items = list(items)
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (", ..." if len(items) > n else "")


def load_weights(model, path: str, *, strict: bool = True) -> None:
    """Load model weights only (evaluation, export, initialisation)."""
    Checkpointer(model, strict=strict).load(path, checkpointables=[])
