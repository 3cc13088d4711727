"""Two training processes on CPU (gloo), launched as ``--num-gpus 2`` does, with a synchronised-batch-norm
ResNet-18-FPN: DDP keeps the ranks identical, and with the same total batch the result matches one process
(the data of an iteration does not depend on the number of processes, losses are normalised and batch
statistics computed over all processes)."""

import warnings

import pytest
import torch
from detectron2.engine import launch
from detectron2.utils import comm
from training_setup import SYNCBN_CONFIG, loss_history, run_main, train_net

# one scale: one process pads 4 images together, two processes 2 + 2; equal sizes make that irrelevant
OPTS = ["dataloader.train.mapper.augmentations.min_sizes=[64]", "train.max_iter=3"]


def _rank_main(args, out_dir):
    torch.set_num_threads(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = train_net.main(args)
    assert isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel)
    # per-iteration losses (on rank 0: averaged over the ranks) and this rank's weights
    losses = loss_history(trainer) if comm.is_main_process() else {}
    deprecated = [
        str(w.message) for w in caught if issubclass(w.category, FutureWarning) and "buffers" in str(w.message)
    ]
    result = {"losses": losses, "model": trainer.model.module.state_dict(), "deprecated": deprecated}
    torch.save(result, f"{out_dir}/rank{comm.get_rank()}.pth")


@pytest.mark.slow
def test_two_processes_end_with_identical_weights_equal_to_one_process(tiny_run):
    args = train_net.argument_parser().parse_args(["--config-file", str(SYNCBN_CONFIG), *OPTS])
    launch(_rank_main, 2, dist_url="auto", args=(args, str(tiny_run)))

    rank0, rank1 = (torch.load(tiny_run / f"rank{r}.pth", weights_only=True) for r in (0, 1))
    assert rank0["deprecated"] == rank1["deprecated"] == []  # train.ddp.broadcast_buffers maps to its new name
    assert rank0["model"].keys() == rank1["model"].keys()
    for k, v in rank0["model"].items():
        assert torch.equal(v, rank1["model"][k]), k
    final = torch.load(tiny_run / "output/model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(final[k], v) for k, v in rank0["model"].items())
    assert (tiny_run / "output/coco_instances_results.json").is_file()  # evaluation gathered on rank 0

    trainer = run_main(SYNCBN_CONFIG, *OPTS, f"train.output_dir={tiny_run / 'single'}")
    single = loss_history(trainer)
    assert sorted(single) == sorted(rank0["losses"]) == [0, 1, 2]
    assert all(rank0["losses"][i] == pytest.approx(single[i], rel=1e-4) for i in single)
    # AdamW moves a weight by up to ~lr per step whatever the gradient's size, so float-level gradient
    # differences can show up to that bound; batch-norm statistics were computed over both processes
    lr, steps = 1e-4, 3
    single = trainer.model.state_dict()
    assert any(k.endswith("running_var") for k in single)
    for k, v in single.items():
        if k.endswith("num_batches_tracked"):  # a counter the synchronised batch norm does not keep
            continue
        # one process keeps the unbiased batch variance, the synchronised one the biased: ratio n / (n - 1)
        # with n down to 2x2 pixels x 4 images in res5
        rtol = 0.1 if k.endswith("running_var") else 0
        assert torch.allclose(v, rank0["model"][k], rtol=rtol, atol=lr * steps), k
