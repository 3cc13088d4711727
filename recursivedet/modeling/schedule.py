"""Which parameter set and how many dynamic passes each decoder stage uses (RecursiveDet Sec. 3.2, Table 4).

The schedule is the same for every host: Sparse R-CNN's and DiffusionDet's :class:`~.decoder.RecursiveDecoder`
and the AdaMixer host's decoder (``projects/AdaMixer``) build ``num_modules`` stage modules and ask it, per
stage t, which module to run and how often its dynamic layer and out layer repeat.

``stage_sharing``:
- ``"none"``: every stage has its own parameters (the host detector);
- ``"all"``: one set of parameters for all stages (RecSt);
- ``"all_but_first"``: the first stage has its own, stages 2..T share one set (RecSt-dagger).
``dynamic_passes`` > 1 reuses the dynamic layer and out layer inside a stage (RecDy).
"""

from recursivedet.errors import ConfigValueError

STAGE_SHARING = ("none", "all", "all_but_first")


class StageSchedule:
    """Stage t (0-based) -> index of its stage module and number of dynamic passes.

    Args:
        num_stages: T (6).
        stage_sharing: see the module docstring.
        dynamic_passes: passes of every stage (2 = RecDy).
        first_stage_dynamic_passes: passes of stage 1; None = ``dynamic_passes`` (the official RecursiveDet code
            runs one pass in its independent first stage).
    """

    def __init__(
        self,
        num_stages: int = 6,
        stage_sharing: str = "none",
        dynamic_passes: int = 1,
        first_stage_dynamic_passes: int | None = None,
    ):
        if stage_sharing not in STAGE_SHARING:
            raise ConfigValueError(f"stage_sharing must be one of {STAGE_SHARING}, got {stage_sharing!r}")
        if num_stages < 1:
            raise ConfigValueError(f"num_stages must be at least 1, got {num_stages}")
        if dynamic_passes < 1 or (first_stage_dynamic_passes is not None and first_stage_dynamic_passes < 1):
            raise ConfigValueError("dynamic-conv passes must be at least 1")
        self.num_stages = num_stages
        self.stage_sharing = stage_sharing
        self.dynamic_passes = dynamic_passes
        self.first_stage_dynamic_passes = first_stage_dynamic_passes

    def check_stage_count(self, count: int | None, key: str) -> int:
        """``count`` stages to run (None: ``num_stages``), checked: at least 1, and more than ``num_stages`` only
        when the stages share a module that can run again (paper Fig. 4). ``key`` names the setting in errors."""
        if count is None:
            return self.num_stages
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigValueError(f"{key} must be a positive integer, got {count!r}")
        if count > self.num_stages and self.stage_sharing == "none":
            raise ConfigValueError(
                f"{key}={count} exceeds the {self.num_stages} trained stages, but stage_sharing='none' has no "
                f"module for stage {self.num_stages + 1}: more stages than trained need a shared decoder "
                "(stage_sharing='all' or 'all_but_first')"
            )
        return count

    @property
    def num_modules(self) -> int:
        """How many stage modules (parameter sets) the decoder builds."""
        return {"none": self.num_stages, "all": 1, "all_but_first": min(2, self.num_stages)}[self.stage_sharing]

    def module_index(self, t: int) -> int:
        """Index of the stage module used at stage t."""
        if self.stage_sharing == "none":
            return t
        if self.stage_sharing == "all":
            return 0
        return min(t, 1)

    def passes(self, t: int) -> int:
        """Dynamic passes of stage t."""
        if t == 0 and self.first_stage_dynamic_passes is not None:
            return self.first_stage_dynamic_passes
        return self.dynamic_passes
