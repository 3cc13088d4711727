"""What a host's comparison with its official code supplies to the shared runner (:mod:`~.compare`), and the
settings every process of one comparison shares.

A project's ``side_by_side/adapter.py`` subclasses :class:`ComparisonAdapter`: how to recognise its official
checkout, its host options (``--steps``, ``--dtype``, ...), its official worker and training worker, how to build
and run its own model from the converted weights, and how outputs are compared and printed. The defaults fit a host
whose outputs are per-stage logits and boxes and final detections (:mod:`~.output_diff`).
"""

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from recursivedet.errors import UserError
from recursivedet.hosts import hosts

from .comparison_report import print_images
from .measure import model_parts
from .output_diff import compare_image, image_agrees, to_pixel_xyxy
from .worker_process import WorkerProcess

COMMAND = "recursivedet.analysis.compare"  # the module a worker process runs


class OfficialCheckoutError(UserError):
    """The official root is not a checkout of the official code the comparison needs."""


@dataclass(frozen=True)
class Settings:
    """The settings of one comparison, which every worker process receives (``official_root`` absolute).
    ``options``: the host options (:meth:`ComparisonAdapter.add_arguments`), also readable as attributes
    (``settings.steps``, ``settings.dtype``)."""

    host: str
    arch: str
    official_root: str
    proposals: int
    seed: int
    threads: int
    timing_runs: int
    options: dict = field(default_factory=dict)

    def __getattr__(self, name: str):
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        raise AttributeError(name)

    def argv(self) -> list[str]:
        """These settings as options of the comparison's command."""
        argv = [*("--host", self.host, "--arch", self.arch, "--official-root", self.official_root)]
        argv += [*("--proposals", str(self.proposals), "--seed", str(self.seed), "--threads", str(self.threads))]
        argv += ["--timing-runs", str(self.timing_runs)]
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                argv += [flag] if value else []
            elif isinstance(value, list | tuple):
                argv += [flag, *map(str, value)]
            else:
                argv += [flag, str(value)]
        return argv

    def worker(self, work: Path, name: str, role: tuple[str, ...] = ()) -> WorkerProcess:
        """A worker process of the comparison's command with these settings (:mod:`~.worker_process`)."""
        return WorkerProcess(COMMAND, self.argv(), work, name, role)


class ComparisonAdapter:
    """One host's side of the comparison. Class attributes:

    - ``host``: the project's name (``recursivedet.hosts``; its declaration names the official codes compared,
      :attr:`archs`);
    - ``official_name`` and ``official_config``: how an error names the official code, and a file (relative to
      the checkout's root) that every checkout of it has;
    - ``description``: the command's ``--help`` text for this host;
    - the defaults of ``--proposals``, ``--num-images`` and ``--score-tol`` (with its help).
    """

    host: str = ""
    official_name = "the official code"
    official_config = ""
    description = ""
    proposals = 100
    proposals_help: str | None = None
    num_images = 2
    score_tol = 1e-4
    score_tol_help = ""

    @property
    def archs(self) -> tuple[str, ...]:
        return hosts()[self.host].comparison.archs

    # Options and checks.

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The host's own options; their destinations are the keys of ``Settings.options``."""

    def default_options(self) -> dict:
        parser = argparse.ArgumentParser(add_help=False)
        self.add_arguments(parser)
        return vars(parser.parse_args([]))

    def settle(self, arch: str, options: dict) -> dict:
        """The host options checked (a :class:`~recursivedet.errors.UserError` for a bad one) and completed."""
        return options

    def is_checkout(self, root: Path) -> bool:
        return (root / self.official_config).is_file()

    # The worker processes (the official code is imported there only).

    def official_worker(self, settings: Settings, work: Path) -> int:
        """Build and randomise the official model, save ``official_state.pth`` and ``official_outputs.pth`` from
        ``images.pth``, say ready and, with ``timing_runs``, time its parts on request."""
        raise NotImplementedError

    def training_worker(self, settings: Settings, work: Path, side: str) -> int:
        """``side``'s ("ours" or "official") training worker (:func:`~.training_comparison.serve_training`)."""
        raise NotImplementedError

    # This project's side, in the comparing process.

    def prepare(self, settings: Settings, work: Path, images: list[torch.Tensor]) -> None:
        """Write what the official worker reads besides ``images.pth`` (e.g. shared random draws)."""

    def build_model(self, settings: Settings, state_dict: dict):
        """This project's model loaded strictly with the converted ``state_dict``, in eval mode."""
        raise NotImplementedError

    def run_model(self, settings: Settings, model, images: list[torch.Tensor], work: Path) -> list:
        """This project's outputs per image, as :meth:`compare_outputs` takes them."""
        raise NotImplementedError

    def timed_parts(self, settings: Settings, model, inputs: list[dict]) -> dict[str, Callable]:
        """The parts timed against the official worker's parts of the same names."""
        parts = model_parts(model, inputs)
        return {"head": parts["head"], "model": parts["model"]}

    def compare_outputs(self, sizes: list[tuple[int, int]], ours: list, official) -> list[dict]:
        """The report's "images": per image the stages and final detections compared (:mod:`~.output_diff`)."""
        images = []
        for (h, w), a, b in zip(sizes, ours, official["results"], strict=True):
            a["stage_pixel_boxes"] = to_pixel_xyxy(a["stage_boxes"], "cxcywh_normalised", h, w)
            b["stage_pixel_boxes"] = to_pixel_xyxy(b["stage_boxes"], official["box_format"], h, w)
            images.append(compare_image(a, b, h, w))
        return images

    def agrees(self, image: dict, score_tol: float, box_tol: float) -> bool:
        return image_agrees(image, score_tol, box_tol)

    def trains(self, settings: Settings) -> bool:
        """Whether the training step can be compared with these settings."""
        return True

    def prepare_training(self, settings: Settings, work: Path, batch: int) -> None:
        """Write what both training workers read besides the batch and the weights."""

    # The report.

    def report_settings(self, settings: Settings) -> dict:
        """The host's entries of the report, after "seed"."""
        return {}

    def headline(self, report: dict) -> str:
        """The report's first line: what was compared, with the tolerances."""
        raise NotImplementedError

    def print_images(self, images: list[dict]) -> None:
        print_images(images)
