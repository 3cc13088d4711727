"""The same random numbers for both codes: DiffusionDet draws its noise boxes (sampling) and its corruption (training)
from torch's global generator in an order of its own. Here the comparing process draws them once, and each side's
draws are answered from that tape while it runs.

Sampling, per image and DDIM step: the official code draws the step noise for the R boxes it kept (``randn_like``)
and fresh noise for the N - R renewed ones (``randn``); this project draws N of each and uses the kept boxes' rows
first, the renewed ones after them. So each tape entry is an (N, 4) tensor: ``randn_like`` answers its first
rows, ``randn`` its last ones, and this project's sampler the whole entry.

Training, per image: t (official ``randint``), the corruption noise (N, 4) and the N - G placeholder boxes of the
padding (official ``randn`` / ``randn``, in that order).
"""

from contextlib import contextmanager

import torch


def sampling_tape(num_images: int, proposals: int, steps: int, seed: int) -> list[list[torch.Tensor]]:
    """Per image, the 1 + 2 (steps - 1) noise entries (N, 4) of one sampling run: the initial boxes, then the
    step noise and the fresh boxes of each step but the last."""
    g = torch.Generator().manual_seed(seed + 11)
    return [[torch.randn(proposals, 4, generator=g) for _ in range(1 + 2 * (steps - 1))] for _ in range(num_images)]


def training_tape(num_boxes: list[int], proposals: int, timesteps: int, seed: int) -> list[dict]:
    """Per image (with ``num_boxes`` ground-truth boxes, fewer than ``proposals``): its step t, corruption
    noise (N, 4) and placeholder boxes (N - G, 4) (standard normal, as drawn)."""
    g = torch.Generator().manual_seed(seed + 13)
    tape = []
    for boxes in num_boxes:
        tape.append(
            {
                "t": torch.randint(0, timesteps, (1,), generator=g),
                "noise": torch.randn(proposals, 4, generator=g),
                "placeholder": torch.randn(proposals - boxes, 4, generator=g),
            }
        )
    return tape


def _shape(size) -> tuple[int, ...]:
    """The shape of ``torch.randn(*size)``: sizes given one by one or as one sequence."""
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)


@contextmanager
def replaced(**functions):
    """``torch.<name>`` replaced by ``functions[name]`` inside the block (this process only)."""
    saved = {name: getattr(torch, name) for name in functions}
    for name, fn in functions.items():
        setattr(torch, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch, name, fn)


@contextmanager
def official_sampling_draws(entries: list[torch.Tensor]):
    """The official ``ddim_sample`` of one image (batch 1) drawing from ``entries`` (see the module docstring)."""
    queue = list(entries)

    def randn(*size, **kwargs):
        shape = _shape(size)  # (1, M, 4): the initial boxes (M = N) or M renewed ones
        entry = queue.pop(0)
        return entry[len(entry) - shape[1] :][None].to(kwargs.get("device") or "cpu").clone()

    def randn_like(like, **kwargs):
        entry = queue.pop(0)
        return entry[: like.shape[1]][None].to(like).clone()

    with replaced(randn=randn, randn_like=randn_like):
        yield
    if queue:
        raise RuntimeError(f"the official sampling drew {len(entries) - len(queue)} of {len(entries)} noise tensors")


@contextmanager
def official_training_draws(tape: list[dict]):
    """The official ``prepare_targets`` drawing each image's t, noise and placeholders from ``tape``."""
    queue = []
    for image in tape:
        queue += [("randint", image["t"]), ("randn", image["noise"]), ("randn", image["placeholder"])]

    def drawer(kind):
        def draw(*args, **kwargs):
            got, value = queue.pop(0)
            if got != kind:
                raise RuntimeError(f"the official code drew with {kind}, the tape has a {got} draw next")
            return value.clone().to(kwargs.get("device") or "cpu")

        return draw

    with replaced(randint=drawer("randint"), randn=drawer("randn")):
        yield
    if queue:
        raise RuntimeError(f"the official corruption left {len(queue)} draws of the tape unused")


def project_training_draws(model, tape: list[dict]) -> None:
    """This project's ``model.corrupt`` drawing from ``tape``: per image the placeholders of
    :meth:`BoxDiffusion.pad_boxes`, then all steps t and all noise (the order of :meth:`DiffusionDet.corrupt`)."""
    corrupt = model.corrupt

    def corrupt_from_tape(targets):
        queue = [image["placeholder"] for image in tape]
        queue += [torch.cat([image["t"] for image in tape]), torch.stack([image["noise"] for image in tape])]

        def draw(*args, **kwargs):
            return queue.pop(0).clone().to(kwargs.get("device") or "cpu")

        with replaced(randn=draw, randint=draw):
            result = corrupt(targets)
        if queue:
            raise RuntimeError(f"the corruption left {len(queue)} draws of the tape unused")
        return result

    model.corrupt = corrupt_from_tape
