"""Parts of the comparison with the official DiffusionDet that run without an official checkout: the random tape
that gives both codes the same draws (checked against the official order of draws, written out here), the pairing
of final detections, and the refusal of a path that is not an official checkout."""

import pytest
import torch
from model_factory import tiny_diffusiondet

from recursivedet.analysis import benchmark
from recursivedet.errors import run_command
from recursivedet.projects.DiffusionDet.modeling.diffusion import ddim_time_pairs
from recursivedet.projects.DiffusionDet.side_by_side.__main__ import main as side_by_side_main
from recursivedet.projects.DiffusionDet.side_by_side.outputs import compare_detections
from recursivedet.projects.DiffusionDet.side_by_side.random_tape import (
    official_sampling_draws,
    official_training_draws,
    project_training_draws,
    sampling_tape,
    training_tape,
)


def test_official_draws_come_from_the_tape_and_torch_is_restored():
    n, r = 6, 2
    (entries,) = sampling_tape(1, n, 2, seed=0)
    randn = torch.randn
    with official_sampling_draws(entries):
        assert torch.equal(torch.randn((1, n, 4)), entries[0][None])  # initial boxes
        assert torch.equal(torch.randn_like(torch.zeros(1, r, 4)), entries[1][None, :r])  # step noise of kept boxes
        assert torch.equal(torch.randn(1, n - r, 4), entries[2][None, r:])  # renewed boxes
    assert torch.randn is randn
    with pytest.raises(RuntimeError, match="drew 1 of 3"):
        with official_sampling_draws(entries):
            torch.randn(1, n, 4)


def _official_two_steps(predict, diffusion, entries, eta=1.0, threshold=0.5):
    """The official ``ddim_sample`` loop of one image with renewal (two steps), written out: kept boxes first,
    step noise ``randn_like`` of the kept ones, then the renewed boxes; returns the boxes of the second step."""
    (t, t_next), _ = ddim_time_pairs(2, diffusion.timesteps)
    with official_sampling_draws(entries):
        img = torch.randn(1, len(entries[0]), 4)
        logits, boxes = predict(diffusion.to_boxes(img), t)
        x_start = diffusion.to_signal(boxes).clamp(-diffusion.scale, diffusion.scale)
        eps = diffusion.noise_from_start(img, t, x_start)
        keep = logits[0].sigmoid().amax(-1) > threshold
        x_start, eps = x_start[:, keep], eps[:, keep]
        noise = torch.randn_like(x_start)
        img = diffusion.ddim_step(x_start, eps, t, t_next, eta, noise)
        img = torch.cat((img, torch.randn(1, len(keep) - int(keep.sum()), 4)), dim=1)
    return diffusion.to_boxes(img)


def test_sampler_fed_from_the_tape_follows_the_official_order():
    model = tiny_diffusiondet(**{"sampler.steps": 2}).eval()
    n = model.num_proposals
    (entries,) = sampling_tape(1, n, 2, seed=3)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, n, 3, generator=g) * 3  # some boxes above 0.5, some below
    shift = torch.randn(1, n, 4, generator=g) * 0.05
    seen = []

    def predict(boxes, t):
        seen.append(boxes.clone())
        return logits, (boxes + shift).clamp(0, 1)

    queue = list(entries)
    model.sampler.draw = lambda generators, num, device, dtype: queue.pop(0)[None]
    model.sampler.run(predict, model.diffusion, n, [0], torch.device("cpu"))
    expected = _official_two_steps(predict, model.diffusion, entries)
    kept = int((logits.sigmoid().amax(-1) > 0.5).sum())
    assert 0 < kept < n and not queue
    torch.testing.assert_close(seen[1], expected, rtol=1e-6, atol=1e-6)


def test_training_draws_are_the_same_on_both_sides():
    """Official order per image: t, noise, placeholders; this project's: all placeholders, then t and noise."""
    model = tiny_diffusiondet().train()
    gt = [torch.tensor([[0.3, 0.4, 0.2, 0.1]]), torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.2, 0.7, 0.1, 0.1]])]
    tape = training_tape([1, 2], model.num_proposals, model.diffusion.timesteps, seed=0)
    with official_training_draws(tape):
        official = [(torch.randint(0, 1000, (1,)), torch.randn(8, 4), torch.randn(8 - len(b), 4)) for b in gt]
    for (t, noise, placeholder), image in zip(official, tape, strict=True):
        assert torch.equal(t, image["t"]) and torch.equal(noise, image["noise"])
        assert torch.equal(placeholder, image["placeholder"])
    project_training_draws(model, tape)
    boxes, t = model.corrupt([{"boxes": b, "labels": torch.zeros(len(b), dtype=torch.long)} for b in gt])
    x0 = []
    for b, image in zip(gt, tape, strict=True):
        placeholder = image["placeholder"] / 6 + 0.5  # N(0.5, 1/6), w and h at least 1e-4
        placeholder[:, 2:] = placeholder[:, 2:].clamp(min=1e-4)
        x0.append(torch.cat((b, placeholder)))
    x0 = torch.stack(x0)
    noise = torch.stack([image["noise"] for image in tape])
    assert torch.equal(t, torch.cat([image["t"] for image in tape]))
    torch.testing.assert_close(boxes, model.diffusion.corrupt(x0, t, noise))


def test_final_detections_pair_up_whatever_their_order():
    g = torch.Generator().manual_seed(0)
    n = 7
    ours = {
        "boxes": torch.rand(n, 4, generator=g) * 100,
        "scores": torch.rand(n, generator=g),
        "classes": torch.randint(0, 3, (n,), generator=g),
    }
    order = torch.randperm(n, generator=g)
    official = {k: v[order] for k, v in ours.items()}
    same = compare_detections(ours, official, 100, 100)
    assert same["paired"] == n and same["only_in_one"] == 0
    assert same["max_abs_score_diff"] == 0 and same["max_abs_box_diff_px"] == 0
    official["classes"] = official["classes"].clone()
    official["classes"][0] = (official["classes"][0] + 1) % 3
    other = compare_detections(ours, official, 100, 100)
    assert other["paired"] == n - 1 and other["only_in_one"] == 2


@pytest.mark.parametrize(
    "argv",
    [
        lambda root: side_by_side_main(["--official-root", root]),
        lambda root: benchmark.main(["--official-root", root, "--arch", "diffusiondet"]),
    ],
    ids=["side_by_side", "benchmark"],
)
def test_commands_refuse_a_path_that_is_not_an_official_checkout(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_command(lambda: argv(str(tmp_path)))
    assert exit_info.value.code == 2
    assert f"error: {tmp_path} is not a checkout of the official DiffusionDet code" in capsys.readouterr().err
