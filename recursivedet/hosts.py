"""The hosts of the RecursiveDet decoder (Sparse R-CNN, DiffusionDet, AdaMixer, ...), as their projects declare them.

A project (``projects/<Host>/``) declares one :class:`Host` in its ``host.py``: the converter of the official
checkpoints, the comparison with the official code, its rows of the paper's tables and whether its models can be
exported. The package lists each declaration as an entry point of the group :data:`ENTRY_POINT_GROUP`
(``pyproject.toml``), so the library finds the projects without naming one, and another installed package can add a
host the same way.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from types import ModuleType

from recursivedet.model_zoo import get_config_file

ENTRY_POINT_GROUP = "recursivedet.hosts"


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's tables: its figures (parameters in millions, GFLOPs, COCO val2017 AP) and the config
    that reproduces it."""

    table: str
    label: str
    config: str  # config name, see recursivedet.model_zoo
    params_m: float | None = None
    gflops: float | None = None
    ap: float | None = None

    @property
    def config_path(self) -> str:
        return get_config_file(self.config)


@dataclass(frozen=True)
class Comparison:
    """The side-by-side comparison with the official code (``python -m recursivedet.analysis.compare --host``).

    Attributes:
        archs: the official codes it compares with (``--arch``; also of ``python -m recursivedet.analysis.benchmark
            --official-root``).
        adapter: returns the project's :class:`recursivedet.analysis.comparison_adapter.ComparisonAdapter` (imported
            when called: the comparison's modules are not needed to list the hosts).
    """

    archs: tuple[str, ...]
    adapter: Callable[[], object]


@dataclass(frozen=True)
class Host:
    """What a project declares.

    Attributes:
        name: the project folder (``projects/<name>``).
        converter: the module converting official checkpoints: ``recognise(state_dict) -> arch | None``,
            ``convert_official_state_dict(state_dict)``, ``MODEL_CONFIGS`` (arch -> config name) and
            ``KNOWN_FORMAT`` (what it recognises, for error messages).
        comparison: the comparison with the official code, None when the project has none.
        paper_rows: the paper's rows reproduced on this host, by group ("main", "ablation", "swin", ...).
        meta_architecture: the detector class the host's configs build.
        export: how ``python -m recursivedet.deploy`` exports the host's models: a callable that turns a model in
            eval mode (a copy, which it may change) into its exportable graph (a
            :class:`~recursivedet.deploy.graph.DetectorGraph`: one image in, boxes, scores and classes out), raising
            ValueError with a one-line reason for a setting it cannot export; or a one-line reason why the host's
            models cannot be exported; None: the project declares no export.
        inapplicable_switches: the paper switches (config keys of ``recursivedet.switches``) that the host's
            configs do not have, with the reason; an override of one stops with that reason.
    """

    name: str
    converter: ModuleType | None = None
    comparison: Comparison | None = None
    paper_rows: dict[str, list[PaperRow]] = field(default_factory=dict)
    meta_architecture: type | None = None
    export: Callable[[object], object] | str | None = None
    inapplicable_switches: dict[str, str] = field(default_factory=dict)


@cache
def hosts() -> dict[str, Host]:
    """Every declared host by name, in the order of their names."""
    found = {}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        host = point.load()
        if not isinstance(host, Host):
            raise TypeError(f"entry point {point.name} = {point.value} of {ENTRY_POINT_GROUP} is not a Host")
        found[host.name] = host
    if not found:
        raise RuntimeError(
            f"no host is declared (entry points {ENTRY_POINT_GROUP}): install the package with its metadata, "
            "e.g. `make setup` or `pip install -e .`"
        )
    return found


def paper_rows(group: str | None = None) -> list[PaperRow]:
    """The paper's rows of every host (of one group: "main", "ablation", "swin")."""
    return [r for h in hosts().values() for g, rows in h.paper_rows.items() if group in (None, g) for r in rows]


def host_of_model(model) -> Host | None:
    """The declared host whose meta-architecture ``model`` is (or derives from)."""
    for host in hosts().values():
        if host.meta_architecture is not None and isinstance(model, host.meta_architecture):
            return host
    return None
