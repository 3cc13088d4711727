"""Convert a checkpoint of an official host detector's code into this project's format.

    python -m recursivedet.convert official.pth converted.pth

Each host that knows an official format declares its converter (:class:`recursivedet.hosts.Host`): a module with
``recognise(state_dict) -> architecture | None``, ``convert_official_state_dict(state_dict) -> state_dict``,
``MODEL_CONFIGS`` (architecture -> the config name whose model takes it) and ``KNOWN_FORMAT`` (what it
recognises, for the message about a file that no converter knows). The file is read with
``torch.load(weights_only=True)``: nothing it contains is executed.
"""

import argparse
import os

import torch

from recursivedet.engine.checkpoint import CheckpointError, atomic_write, load_checkpoint
from recursivedet.errors import CheckpointFormatError, run_command
from recursivedet.hosts import hosts

__all__ = ["convert_checkpoint", "load_checkpoint_file", "main", "official_converters"]


def official_converters() -> list:
    """The converters the hosts declare (:mod:`recursivedet.hosts`). Each recogniser claims only its own format
    (DiffusionDet's head keeps Sparse R-CNN's stage names: the Sparse R-CNN one leaves checkpoints with time MLPs
    alone), so their order does not matter."""
    return [h.converter for h in hosts().values() if h.converter is not None]


def convert_checkpoint(state_dict: dict) -> tuple[str, dict, str]:
    """(architecture, converted state dict, config name to use it with) of an official state dict;
    :class:`~recursivedet.errors.CheckpointFormatError` when no converter recognises it."""
    converters = official_converters()
    for converter in converters:
        arch = converter.recognise(state_dict)
        if arch is not None:
            return arch, converter.convert_official_state_dict(state_dict), converter.MODEL_CONFIGS[arch]
    if any(k.startswith("decoder.stages.") for k in state_dict):
        raise CheckpointFormatError("this checkpoint is already in this project's format (decoder.stages.*)")
    sample = ", ".join(list(state_dict)[:5])
    known = "; nor an ".join(c.KNOWN_FORMAT for c in converters)
    raise CheckpointFormatError(f"not an {known} (first keys: {sample})")


def load_checkpoint_file(path: str) -> dict:
    """The state dict inside a detectron2-style checkpoint ({"model": ...}) or a bare state dict. The file
    is read with ``torch.load(weights_only=True)``: nothing it contains is executed."""
    data = load_checkpoint(path)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return data["model"]
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data
    raise CheckpointFormatError(f"{path} holds no state dict (expected a dict of tensors or {{'model': ...}})")


def check_output_path(path: str) -> None:
    """Refuse an output path that cannot be written, before the conversion. A missing folder is not
    created: it is more often a typo than a wish for a new folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CheckpointError(f"output {path} is a directory; give the path of the .pth file to write")
    if not os.path.isdir(folder):
        what = "is not a directory" if os.path.exists(folder) else "does not exist"
        raise CheckpointError(f"cannot write {path}: its folder {folder} {what} (create it first)")
    if not os.access(folder, os.W_OK):
        raise CheckpointError(f"cannot write {path}: no permission to write in {folder}")


def main(argv=None) -> int:
    """The command line; raises a :class:`~recursivedet.errors.UserError` for any problem of the input
    (``run_command`` reports it as one ``error:`` line, exit status 2)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="official checkpoint (.pth)")
    parser.add_argument("target", help="where to write the converted checkpoint (.pth); its folder must exist")
    args = parser.parse_args(argv)
    check_output_path(args.target)
    state = load_checkpoint_file(args.source)
    arch, converted, config = convert_checkpoint(state)
    # atomic: a failed or interrupted write leaves no partial checkpoint behind
    atomic_write(args.target, lambda f: torch.save({"model": converted, "converted_from": arch}, f))
    print(
        f"converted an official {arch} checkpoint ({len(converted)} tensors) to {args.target}; "
        f"use it with a config of the model in {config}"
    )
    return 0


if __name__ == "__main__":
    run_command(main)
