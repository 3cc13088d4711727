"""python -m recursivedet.export --video: one image per frame (ids, frame indices, the same detections as the
frame exported as an image), a drawn video, the timing line, and videos that cannot be opened."""

import json

import cv2
import numpy as np
import pytest
from model_factory import one_thread
from PIL import Image
from training_setup import TINY_CONFIG, run_main, tiny_run_at

from recursivedet import export
from recursivedet.errors import run_command


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    with tiny_run_at(tmp_path_factory.mktemp("export_video")) as root:
        run_main(TINY_CONFIG, "train.max_iter=2")
        yield root, root / "output" / "model_final.pth"


def _write_video(path, frames, fps=5.0):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for rgb in frames:
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()


def _export(weights, *args):
    with one_thread():
        return export.main(["--config-file", str(TINY_CONFIG), "--weights", str(weights), *args])


@pytest.mark.slow
def test_video_frames_are_exported_like_images(trained, tmp_path, capsys):
    root, weights = trained
    frames = [np.asarray(Image.open(root / "data" / "tiny_val" / f"00{i}.png").convert("RGB")) for i in range(3)]
    video = tmp_path / "clip.avi"
    _write_video(video, frames)
    out = tmp_path / "out"
    result = _export(weights, "--video", str(video), "--output", str(out), "--visualize", "--vis-threshold", "0")
    printed = capsys.readouterr().out
    assert "3 frames: read" in printed and "ms/frame" in printed and "model" in printed and "draw" in printed
    results = json.loads(result.written["predictions"].read_text())
    images = json.loads(result.written["images"].read_text())["images"]
    assert [(im["id"], im["frame"], im["width"], im["height"]) for im in images] == [
        (i + 1, i, 64, 64) for i in range(3)
    ]
    assert {r["frame"] for r in results} == {0, 1, 2} and all(r["image_id"] == r["frame"] + 1 for r in results)
    drawn = cv2.VideoCapture(str(out / "visualized.mp4"))
    assert int(drawn.get(cv2.CAP_PROP_FRAME_COUNT)) == 3

    # each frame gives the detections of the same (decoded) frame exported as an image
    decoded = cv2.VideoCapture(str(video))
    folder = tmp_path / "decoded"
    folder.mkdir()
    for i in range(3):
        ok, bgr = decoded.read()
        assert ok
        cv2.imwrite(str(folder / f"{i}.png"), bgr)
    as_images = _export(weights, "--images", str(folder), "--output", str(tmp_path / "img"))
    expected = json.loads(as_images.written["predictions"].read_text())
    key = lambda r: (r["image_id"], r["category_id"], round(r["score"], 5))  # noqa: E731
    assert len(expected) == len(results)
    for a, b in zip(sorted(results, key=key), sorted(expected, key=key), strict=True):
        assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)


@pytest.mark.parametrize("kind", ["missing", "not a video", "folder"])
def test_a_video_that_cannot_be_opened_is_one_line(trained, tmp_path, capsys, kind):
    _, weights = trained
    video = tmp_path / "clip.mp4"
    if kind == "not a video":
        video.write_text("no frames here")
    elif kind == "folder":
        video.mkdir()
    argv = ["--config-file", TINY_CONFIG, "--weights", weights, "--video", video, "--output", tmp_path / "out"]
    with one_thread(), pytest.raises(SystemExit) as stop:
        run_command(lambda: export.command([str(a) for a in argv]))
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    expected = {"missing": "does not exist", "not a video": "cannot be opened by OpenCV", "folder": "is a folder"}
    assert line.startswith(f"error: --video {video}") and expected[kind] in line
    assert not (tmp_path / "out").exists()


def test_an_interrupted_video_export_leaves_the_earlier_run_as_it_was(trained, tmp_path, monkeypatch):
    """Ctrl-C after the first frame: no partial visualized.mp4 replaces the earlier run's, beside its json, and no
    temporary file is left."""
    root, weights = trained
    frames = [np.asarray(Image.open(root / "data" / "tiny_val" / f"00{i}.png").convert("RGB")) for i in range(3)]
    video = tmp_path / "clip.avi"
    _write_video(video, frames)
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"visualized.mp4": b"earlier video", "predictions.json": b"[]", "images.json": b"{}"}
    for name, data in earlier.items():
        (out / name).write_bytes(data)
    drawn = []

    def draw_then_stop(self, rgb):
        drawn.append(rgb)
        if len(drawn) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(export.VideoWriter, "write", draw_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _export(weights, "--video", str(video), "--output", str(out), "--visualize")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".recursivedet.lock"} == earlier
