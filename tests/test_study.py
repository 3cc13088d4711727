"""The study command (``python -m recursivedet.study``): its paper rows equal the ablation configs, the per-stage
evaluation against a brute-force reference and the model's own evaluation, the inference-time stage count, and
a whole study run as the README gives it (at a tiny budget), resumed and refused when its settings change."""

import json
import math
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from recursivedet.engine import ConfigValueError, load_config
from recursivedet.modeling.box_utils import cxcywh_to_xyxy
from recursivedet.study import GROUPS, PAPER_ROWS, StudyRowError, correct_detection_ious, parse_row, select_rows
from recursivedet.study.report import mean_spread, paired_difference, study_tables, tables_markdown, verdict

# study row -> the ablation config stating the same row on the R50 model (SparseRCNN/ablations, SparseRCNN/rego)
ABLATION_CONFIGS = {
    "sparse_rcnn": "SparseRCNN/ablations/table4_sparse_rcnn.py",
    "recst": "SparseRCNN/ablations/table4_recst.py",
    "recst_recdy": "SparseRCNN/ablations/table4_recst_recdy.py",
    "recst_dagger_recdy": "SparseRCNN/ablations/table4_recst_dagger_recdy.py",
    "bbpe": "SparseRCNN/ablations/table6_bbpe.py",
    "bbpe_cbpe": "SparseRCNN/ablations/table6_bbpe_cbpe.py",
    "recursive_bbpe": "SparseRCNN/ablations/table6_recursive_bbpe.py",
    "recursivedet": "SparseRCNN/ablations/table6_recursive_bbpe_cbpe.py",
    "centerness_learnable": "SparseRCNN/ablations/table5_centerness_learnable.py",
    "centerness_adjust": "SparseRCNN/ablations/table5_centerness_adjust.py",
    "recursivedet_rego": "SparseRCNN/rego/table2_3_stages.py",
}


@pytest.mark.parametrize("row", sorted(ABLATION_CONFIGS))
def test_paper_rows_state_the_ablation_configs(row):
    """Each study row's overrides turn the full RecursiveDet into exactly the model of its ablation config."""
    studied = load_config("SparseRCNN/recursivedet_R50_100pro_3x.py", list(PAPER_ROWS[row].overrides))
    ablation = load_config(ABLATION_CONFIGS[row])
    assert OmegaConf.to_container(studied.model) == OmegaConf.to_container(ablation.model)


def test_every_table_row_is_a_paper_row_and_host_configs_load():
    for names in GROUPS.values():
        assert set(names) <= set(PAPER_ROWS)
    for name in ("diffusiondet", "recursivedet_diffusiondet", "adamixer", "recursivedet_adamixer"):
        load_config(PAPER_ROWS[name].config)


def test_row_selection_and_user_rows():
    rows, tables = select_rows(["table4", "table6"], [parse_row("deep: model.decoder.num_stages=6")])
    names = [r.name for r in rows]
    assert names[:4] == list(GROUPS["table4"]) and len(names) == len(set(names)) == 9
    assert tables["own"] == ("deep",) and rows[-1].overrides == ("model.decoder.num_stages=6",)
    assert parse_row("x: config=AdaMixer/adamixer_shapes_demo.py a=1").config == "AdaMixer/adamixer_shapes_demo.py"
    with pytest.raises(StudyRowError, match="no group or row named 'tabel4'"):
        select_rows(["tabel4"], [])
    with pytest.raises(StudyRowError, match="expected 'NAME: key=value"):
        parse_row("no colon")
    with pytest.raises(StudyRowError, match="'oops' is not a key=value"):
        parse_row("x: oops")
    with pytest.raises(StudyRowError, match="already in the study"):
        select_rows(["recst"], [parse_row("recst: a=1")])


def _iou64(a, b):
    """IoU of two XYXY boxes in float64 (reference)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _reference_ious(boxes, scores, classes, gt_boxes, gt_classes):
    taken, out = set(), []
    for d in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        best, best_g = 0.5, None
        for g in range(len(gt_boxes)):
            if g in taken or classes[d] != gt_classes[g]:
                continue
            iou = _iou64(boxes[d], gt_boxes[g])
            if iou > best:
                best, best_g = iou, g
        if best_g is not None:
            taken.add(best_g)
            out.append(best)
    return out


def test_correct_detection_ious_against_brute_force():
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        gt = cxcywh_to_xyxy(torch.rand(6, 4, generator=generator) * 0.5 + 0.25) * 100
        gt_classes = torch.randint(0, 2, (6,), generator=generator)
        # detections: jittered ground truths (some duplicated, some with the wrong class) and random boxes
        pick = torch.randint(0, 6, (10,), generator=generator)
        boxes = torch.cat([gt[pick] + torch.randn(10, 4, generator=generator) * 6, gt[:3] * 0.5])
        classes = torch.cat([gt_classes[pick], torch.randint(0, 2, (3,), generator=generator)])
        scores = torch.rand(13, generator=generator)
        got = correct_detection_ious(boxes, scores, classes, gt, gt_classes)
        want = _reference_ious(
            boxes.double().tolist(), scores.tolist(), classes.tolist(), gt.double().tolist(), gt_classes.tolist()
        )
        assert got == pytest.approx(want, abs=1e-5)
    # one ground truth, two detections on it: only the higher-scoring one is correct
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    got = correct_detection_ious(
        torch.cat([box, box + 1]), torch.tensor([0.2, 0.9]), torch.tensor([0, 0]), box, torch.tensor([0])
    )
    assert got == pytest.approx([81 / 119])


def _shared_decoder_model(sharing: str, **decoder):
    cfg = load_config(
        "SparseRCNN/recursivedet_shapes_demo.py",
        [
            f"model.decoder.stage_sharing={sharing}",
            "model.decoder.num_stages=2",
            "model.num_proposals=5",
            "model.backbone.pretrained=False",
            *[f"model.decoder.{k}={v}" for k, v in decoder.items()],
        ],
    )
    from detectron2.config import instantiate

    torch.manual_seed(0)
    return instantiate(cfg.model).eval()


def test_inference_stages_run_a_shared_decoder_deeper_than_trained():
    model = _shared_decoder_model("all_but_first", inference_stages=4)
    images = model.preprocess_image([{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)}])
    with torch.no_grad():
        deep = model.stage_outputs(images)
        model.decoder.inference_stages = 2
        trained = model.stage_outputs(images)
    assert list(deep) == ["stage 1", "stage 2", "stage 3", "stage 4"] and list(trained) == ["stage 1", "stage 2"]
    for label in trained:  # the first stages do not depend on how many follow
        torch.testing.assert_close(deep[label], trained[label])
    assert not torch.equal(deep["stage 4"][0], deep["stage 2"][0])  # the shared stage ran again
    model.train()  # training always runs the trained stages
    assert len(model.run_decoder(images)) == 2


def test_inference_stages_errors():
    with pytest.raises(
        ConfigValueError, match=r"inference_stages=3 exceeds the 2 trained stages.*stage_sharing='none'"
    ):
        _shared_decoder_model("none", inference_stages=3)
    with pytest.raises(ConfigValueError, match="inference_stages must be a positive integer, got 0"):
        _shared_decoder_model("all", inference_stages=0)
    assert (
        len(
            _shared_decoder_model("none", inference_stages=1).stage_outputs(
                _shared_decoder_model("none").preprocess_image([{"image": torch.zeros(3, 32, 32)}])
            )
        )
        == 1
    )


def test_report_mean_and_spread():
    assert mean_spread([10.0, 12.0, 14.0]) == (12.0, 2.0)
    assert mean_spread([5.0]) == (5.0, 0.0) and all(math.isnan(v) for v in mean_spread([]))
    results = {
        "recst": [
            {
                "seed": s,
                "params": 1000,
                "metrics": {"AP": ap},
                "curve": [[10, ap / 2], [20, ap]],
                "stages": {},
                "train_seconds": 60.0,
                "trained_stages": 2,
            }
            for s, ap in enumerate([10.0, 12.0, 14.0])
        ]
    }
    rows, tables = select_rows(["recst"], [])
    data = study_tables(rows, tables, results)
    assert data["tables"]["rows"][0]["AP"] == (12.0, 2.0) and data["curves"]["recst"][10] == (6.0, 1.0)
    text = tables_markdown(data, {"iters": 20, "seeds": [0, 1, 2], "config": "c.py"})
    assert "| recst (3) | RecSt (Table 4 row 2) | 42.4 | 0.00M | 12.0 ± 2.0 |" in text


def test_paired_differences_interval_and_verdicts():
    """Paired by seed (a seed missing on one side is left out); the 95% interval is Student's t over the per-seed
    differences, checked against its formula with t(0.975, 2) = 4.302653; verdicts only where it excludes 0."""
    row = [{"seed": s, "metrics": {"AP": ap}} for s, ap in [(0, 12.0), (1, 14.5), (2, 15.0), (3, 20.0)]]
    base = [{"seed": s, "metrics": {"AP": ap}} for s, ap in [(0, 10.0), (1, 12.0), (2, 12.0)]]
    d = paired_difference(row, base)
    assert d["per_seed"] == {0: 2.0, 1: 2.5, 2: 3.0} and d["mean"] == 2.5
    half = 4.302653 * 0.5 / math.sqrt(3)
    assert d["interval"] == pytest.approx((2.5 - half, 2.5 + half), abs=1e-5)
    assert verdict(d, 0.5) == "reproduced" and verdict(d, -0.3) == "contradicted" and verdict(d, None) == "higher"
    assert verdict(d, 0.0) == "differs: not an A/A pair"
    noisy = paired_difference(
        row[:3], [{"seed": s, "metrics": {"AP": ap}} for s, ap in [(0, 13.0), (1, 11.0), (2, 16.0)]]
    )
    assert noisy["interval"][0] < 0 < noisy["interval"][1]
    assert verdict(noisy, 0.8) == "not resolved" and verdict(noisy, 0.0) == "equal within noise"
    assert verdict(paired_difference(row[:2], base), 0.8) == "too few seeds (2)"


def test_report_states_the_paired_comparisons_of_a_group():
    def runs(aps):
        return [
            {"seed": s, "params": 1, "metrics": {"AP": ap}, "curve": [], "stages": {}, "train_seconds": 60.0}
            for s, ap in enumerate(aps)
        ]

    rows, tables = select_rows(["pe_diffusiondet"], [])
    results = {
        "recursivedet_diffusiondet_no_pe": runs([50.0, 52.0, 51.0]),
        "recursivedet_diffusiondet": runs([53, 54, 55]),
    }
    data = study_tables(rows, tables, results)
    (comparison,) = data["comparisons"]["pe_diffusiondet"]
    assert comparison["per_seed"] == {0: 3.0, 1: 2.0, 2: 4.0} and comparison["verdict"] == "higher"
    text = tables_markdown(data, {"iters": 20, "seeds": [0, 1, 2], "config": "c.py"})
    assert (
        "| recursivedet_diffusiondet - recursivedet_diffusiondet_no_pe | - | 0: +3.0, 1: +2.0, 2: +4.0 | +3.0 |" in text
    )


STUDY_OPTS = [
    # a tiny, quick version of the demo-size study: 2 stages, 8 proposals, 2 images per batch, trained on the
    # 100 validation images
    "model.decoder.num_stages=2",
    "model.num_proposals=8",
    "model.detections_per_image=8",
    "dataloader.train.dataset.names=shapes_val",
    "dataloader.train.total_batch_size=2",
]


def _study(tmp_path, *args, check=True):
    command = [sys.executable, "-m", "recursivedet.study", "--output", str(tmp_path / "study"), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.slow
def test_study_command_trains_reports_resumes_and_refuses_other_settings(tmp_path):
    args = [
        "--rows",
        "recst",
        "recursivedet_rego",
        "--seeds",
        "0",
        "1",
        "--iters",
        "4",
        "--eval-points",
        "2",
        "--max-stages",
        "3",
        *STUDY_OPTS,
    ]
    first = _study(tmp_path, *args)
    assert "4 to run" in first.stdout and "[4/4]" in first.stdout
    study = tmp_path / "study"
    table = json.loads((study / "table.json").read_text())
    for name in ("convergence", "depth", "rego", "iou"):
        assert (study / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "| recst (2) | RecSt (Table 4 row 2) |" in (study / "table.md").read_text()

    for seed in (0, 1):
        recst = json.loads((study / "runs" / "recst" / f"seed{seed}" / "result.json").read_text())
        # the last stage of the per-stage evaluation is the model's own output: the same AP as its evaluation
        assert recst["stages"]["stage 2"]["AP"] == pytest.approx(recst["metrics"]["AP"], abs=1e-9)
        assert sorted(recst["stages"]) == ["stage 1", "stage 2", "stage 3"]  # shared: one stage deeper
        assert [it for it, _ in recst["curve"]] == [2, 4]
        rego = json.loads((study / "runs" / "recursivedet_rego" / f"seed{seed}" / "result.json").read_text())
        assert sorted(rego["stages"]) == ["rego 1", "rego 2", "rego 3", "stage 1", "stage 2"]
        assert rego["stages"]["rego 3"]["AP"] == pytest.approx(rego["metrics"]["AP"], abs=1e-9)
    assert table["rego"]["recursivedet_rego"]["without_rego"][0] == pytest.approx(
        sum(
            json.loads((study / "runs" / "recursivedet_rego" / f"seed{s}" / "result.json").read_text())["stages"][
                "stage 2"
            ]["AP"]
            for s in (0, 1)
        )
        / 2
    )
    assert sorted(table["depth"]["recst"]["AP"]) == ["1", "2", "3"]

    # again: nothing to run; one result lost (an interrupted run): only that run, from its checkpoint
    assert "0 to run" in _study(tmp_path, *args).stdout
    lost = study / "runs" / "recst" / "seed1" / "result.json"
    before = json.loads(lost.read_text())
    lost.unlink()
    again = _study(tmp_path, *args)
    assert "1 to run" in again.stdout
    after = json.loads(lost.read_text())
    assert after["metrics"] == before["metrics"] and after["curve"] == before["curve"]

    # other settings in the same folder are refused; a typo in a row's override is caught before training
    changed = _study(tmp_path, *[a if a != "4" else "6" for a in args], check=False)
    assert changed.returncode == 2 and "holds a study with iters=4, not 6" in changed.stderr
    typo = _study(
        tmp_path,
        "--rows",
        "recst",
        "--row",
        "bad: model.decoder.num_stagse=3",
        "--iters",
        "4",
        "--seeds",
        "0",
        "1",
        "--eval-points",
        "2",
        "--max-stages",
        "3",
        *STUDY_OPTS,
        check=False,
    )
    assert typo.returncode == 2 and "row 'bad'" in typo.stderr and "num_stages" in typo.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--iters", "0"], "argument --iters: expected an integer >= 1, got 0"),
        (["--jobs", "two"], "argument --jobs: expected an integer >= 1, got 'two'"),
        (["--score-threshold", "1.5"], "argument --score-threshold: expected a score in [0, 1]"),
        (["--seeds", "0", "0"], "--seeds [0, 0] repeats a seed"),
        (["--rows", "tabel4"], "no group or row named 'tabel4'"),
    ],
)
def test_study_command_refuses_bad_arguments(argv, message, tmp_path, capsys):
    from recursivedet.study.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output", str(tmp_path / "study")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "study").exists()  # refused before anything was written


def test_overrides_written_after_list_options_stay_overrides():
    from recursivedet.study.__main__ import argument_parser, overrides_last

    argv = ["--rows", "table4", "model.num_proposals=8", "--seeds", "0", "1", "train.max_iter=5", "--row", "r: a=1"]
    args = argument_parser().parse_args(overrides_last(argv))
    assert args.rows == ["table4"] and args.seeds == [0, 1] and args.row[0].overrides == ("a=1",)
    assert args.opts == ["model.num_proposals=8", "train.max_iter=5"]


def test_report_takes_the_studys_own_settings(tmp_path, capsys):
    """``--report --output DIR`` alone: the study's settings, rows and every completed seed, not the defaults."""
    from recursivedet.study.__main__ import main

    study = tmp_path / "study"
    rows, tables = select_rows(["pe_diffusiondet"], [])
    settings = {
        "config": "SparseRCNN/recursivedet_shapes_demo.py",
        "overrides": [],
        "seeds": [2],
        "iters": 900,
        "eval_period": 900,
        "max_stages": 4,
        "score_threshold": 0.3,
        "rows": {r.name: {"config": r.config, "overrides": list(r.overrides), "paper": r.paper} for r in rows},
        "tables": {t: list(n) for t, n in tables.items()},
    }
    (study).mkdir()
    (study / "study.json").write_text(json.dumps(settings))
    for row, aps in (("recursivedet_diffusiondet_no_pe", [50.0, 51.0]), ("recursivedet_diffusiondet", [52.0, 54.0])):
        for seed, ap in enumerate(aps):
            run = study / "runs" / row / f"seed{seed}"
            run.mkdir(parents=True)
            result = {"seed": seed, "params": 1, "metrics": {"AP": ap}, "curve": [], "stages": {}, "train_seconds": 6}
            (run / "result.json").write_text(json.dumps(result))
    assert main(["--output", str(study), "--report"]) == 0
    text = (study / "table.md").read_text()
    assert text.startswith("Budget: 900 iterations per run, seeds [0, 1]")
    assert "| 0: +2.0, 1: +3.0 | +2.5 |" in text
