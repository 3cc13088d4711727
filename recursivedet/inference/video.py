"""Videos for the export: frames read with OpenCV and prepared as the config's test mapper prepares images,
drawn detections written back as a video, and the time spent reading, in the model and drawing."""

import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from recursivedet.errors import UserError


class VideoError(UserError, ValueError):
    """A video that OpenCV cannot open or read."""


@dataclass
class Stopwatch:
    """Seconds spent per activity ("read", "model", "draw")."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def summary(self, count: int, unit: str) -> str:
        """'model 1.23 s (41.0 ms/frame), read 0.10 s (3.3 ms/frame), ...' in the order first timed."""
        per = max(count, 1)
        return ", ".join(f"{k} {v:.2f} s ({1e3 * v / per:.1f} ms/{unit})" for k, v in self.seconds.items())


class VideoFrames:
    """The frames of a video as the test mapper's inputs: ``{"image": (3, h, w) tensor resized by the mapper's
    augmentations, in its image format, "height", "width", "frame"}`` plus the original RGB frame for drawing.

    Args:
        path: a video file OpenCV can decode.
        mapper: the config's test mapper (its ``augmentations`` and ``image_format`` are used).
    """

    def __init__(self, path: str, mapper):
        if not Path(path).is_file():
            raise VideoError(
                f"--video {path} does not exist" if not Path(path).exists() else f"--video {path} is a folder"
            )
        self.path = path
        self.capture = cv2.VideoCapture(path)
        if not self.capture.isOpened():
            raise VideoError(f"--video {path} cannot be opened by OpenCV (not a video, or a codec it cannot decode)")
        ok, first = self.capture.read()
        if not ok:
            raise VideoError(f"--video {path} has no frame OpenCV can decode")
        self._first = first
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 25.0
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames = count if count > 0 else None  # some containers do not say
        self.height, self.width = first.shape[:2]
        self.augmentations = T.AugmentationList(list(mapper.augmentations.augs))
        self.image_format = mapper.image_format

    def prepare(self, bgr: np.ndarray, index: int) -> dict:
        image = utils.convert_image_to_rgb(bgr, "BGR")  # BGR -> RGB
        model_image = utils.convert_PIL_to_numpy(_pil(image), self.image_format)
        aug = T.AugInput(model_image)
        self.augmentations(aug)
        tensor = torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1)))
        return {"image": tensor, "height": self.height, "width": self.width, "frame": index, "rgb": image}

    def __iter__(self):
        frame, index = self._first, 0
        while frame is not None:
            yield self.prepare(frame, index)
            ok, frame = self.capture.read()
            frame = frame if ok else None
            index += 1
        self.capture.release()


def _pil(rgb: np.ndarray):
    from PIL import Image

    return Image.fromarray(rgb)


class VideoWriter:
    """Writes RGB frames to an .mp4 (MPEG-4 part 2, which OpenCV's own encoder always has): into a new file of a
    unique name that :meth:`close` renames to ``path``, so that an interrupted export leaves no partial video
    (and an earlier run's video stays with its json) and nothing is written through a symlink at ``path``."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        self.path = path
        fd, self.partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        os.close(fd)
        self.writer = cv2.VideoWriter(self.partial, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not self.writer.isOpened():
            self.discard()
            raise VideoError(f"OpenCV cannot write the video {path}")

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))

    def close(self) -> None:
        self.writer.release()
        os.chmod(self.partial, 0o644)
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        """Drop the partial video (the export was interrupted or failed)."""
        if hasattr(self, "writer"):
            self.writer.release()
        if os.path.exists(self.partial):
            os.remove(self.partial)
