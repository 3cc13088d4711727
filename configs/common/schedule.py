"""The official 3x schedule: linear warmup over 1000 iterations from 0.01, lr x0.1 at 210k and 250k of
270k iterations (``train.max_iter``). Steps at or past ``train.max_iter`` are ignored (short runs)."""

from detectron2.config import LazyCall as L

from recursivedet.engine.solver import warmup_multistep

lr_multiplier = L(warmup_multistep)(
    max_iter="${train.max_iter}",
    steps=[210000, 250000],
    warmup_iters=1000,
    warmup_factor=0.01,
    gamma=0.1,
)
