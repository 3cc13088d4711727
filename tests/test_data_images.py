"""Reading images: 16-bit files are scaled to 0-255 (not clipped to white), EXIF orientation is applied to
them as to 8-bit files, 8-bit files read as detectron2 reads them, and pixel types without a 0-255 range are
refused with the file's name."""

import re
import struct
import zlib

import cv2
import numpy as np
import pytest
from detectron2.data.detection_utils import read_image
from PIL import Image

from recursivedet.data import DatasetError, read_image_checked

RNG = np.random.default_rng(0)
# The rounding boundaries of 1/257 (128 -> 0, 129 -> 1, 385 -> 1, 386 -> 2), the ends, and random values.
EDGE_VALUES = [0, 1, 128, 129, 257, 385, 386, 32767, 32768, 65406, 65407, 65534, 65535]


def brute_force_8bit(values: np.ndarray) -> np.ndarray:
    """The 8-bit level k whose 16-bit value 257 * k (0 -> 0, 255 -> 65535) is nearest to each value."""
    levels = 257 * np.arange(256, dtype=np.int64)
    flat = values.astype(np.int64).reshape(-1, 1)
    return np.abs(flat - levels).argmin(axis=1).astype(np.uint8).reshape(values.shape)


def uint16_image(h: int, w: int, channels: int | None = None) -> np.ndarray:
    shape = (h, w) if channels is None else (h, w, channels)
    values = RNG.integers(0, 65536, shape, dtype=np.uint16)
    values.reshape(-1)[: len(EDGE_VALUES)] = EDGE_VALUES
    return values


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_exif_orientation(png: bytes, orientation: int) -> bytes:
    """``png`` with an eXIf chunk (after IHDR) holding the EXIF orientation tag."""
    exif = Image.Exif()
    exif[274] = orientation
    ihdr_end = 8 + 25  # signature, then the 13-byte IHDR chunk with its length, type and CRC
    return png[:ihdr_end] + png_chunk(b"eXIf", exif.tobytes()) + png[ihdr_end:]


def gray_alpha_16bit_png(values: np.ndarray) -> bytes:
    """A 16-bit grey+alpha PNG (colour type 4) of (H, W, 2) ``values``: OpenCV cannot write one."""
    h, w, _ = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def test_16bit_grey_png_is_scaled_in_every_format(tmp_path):
    values = uint16_image(5, 7)
    path = tmp_path / "grey16.png"
    assert cv2.imwrite(str(path), values)
    assert Image.open(path).mode == "I;16"  # what PIL clipped to 255 before
    expected = brute_force_8bit(values)
    assert expected.reshape(-1)[: len(EDGE_VALUES)].tolist() == [0, 0, 0, 1, 1, 1, 2, 127, 128, 254, 255, 255, 255]
    for fmt in ("RGB", "BGR"):
        got = read_image_checked(path, fmt)
        assert got.dtype == np.uint8 and got.shape == (5, 7, 3)
        assert np.array_equal(got, np.repeat(expected[..., None], 3, axis=2))
    assert np.array_equal(read_image_checked(path, "L"), expected[..., None])
    assert np.array_equal(read_image_checked(path), expected)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_is_scaled(tmp_path, suffix, channels):
    values = uint16_image(6, 4, channels)  # OpenCV's order: BGR(A)
    path = tmp_path / f"colour16{suffix}"
    assert cv2.imwrite(str(path), values)
    expected_bgr = brute_force_8bit(values[..., :3])
    assert np.array_equal(read_image_checked(path, "BGR"), expected_bgr)
    assert np.array_equal(read_image_checked(path, "RGB"), expected_bgr[..., ::-1])
    if channels == 4:
        rgba = read_image_checked(path)  # the file's mode: RGBA
        assert np.array_equal(rgba[..., :3], expected_bgr[..., ::-1])
        assert np.array_equal(rgba[..., 3], brute_force_8bit(values[..., 3]))


def test_16bit_grey_tiff_and_grey_alpha_png_are_scaled(tmp_path):
    grey = uint16_image(3, 8)
    tiff = tmp_path / "grey16.tif"
    assert cv2.imwrite(str(tiff), grey)
    assert np.array_equal(read_image_checked(tiff, "L")[..., 0], brute_force_8bit(grey))

    grey_alpha = uint16_image(4, 3, 2)
    png = tmp_path / "grey_alpha16.png"
    png.write_bytes(gray_alpha_16bit_png(grey_alpha))
    expected = brute_force_8bit(grey_alpha)
    rgb = read_image_checked(png, "RGB")
    assert np.array_equal(rgb, np.repeat(expected[..., :1], 3, axis=2))
    assert np.array_equal(read_image_checked(png)[..., 3], expected[..., 1])


@pytest.mark.parametrize("orientation, turn", [(3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1))])
def test_exif_orientation_applies_to_16bit_images(tmp_path, orientation, turn):
    """As detectron2's read_image does for 8-bit images (checked against it on the same file in 8 bits)."""
    colour = uint16_image(3, 5, 3)
    ok, encoded = cv2.imencode(".png", colour)
    assert ok
    path = tmp_path / "colour16_exif.png"
    path.write_bytes(with_exif_orientation(encoded.tobytes(), orientation))
    expected = turn(brute_force_8bit(colour)[..., ::-1])
    assert np.array_equal(read_image_checked(path, "RGB"), expected)

    grey = uint16_image(3, 5)
    path = tmp_path / "grey16_exif.png"
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(grey).save(path, exif=exif)
    assert np.array_equal(read_image_checked(path, "L")[..., 0], turn(brute_force_8bit(grey)))

    eight_bit = tmp_path / "colour8_exif.png"
    Image.fromarray(brute_force_8bit(colour)).save(eight_bit, exif=exif)
    assert np.array_equal(read_image_checked(eight_bit, "RGB"), read_image(str(eight_bit), "RGB"))
    assert read_image_checked(eight_bit, "RGB").shape[:2] == expected.shape[:2]


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "LA", "1", "CMYK"])
def test_8bit_images_read_as_detectron2_reads_them(tmp_path, mode):
    image = Image.fromarray(RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / ("image.jpg" if mode == "CMYK" else "image.png")
    image.save(path)
    for fmt in ("RGB", "BGR", "L", None):
        assert np.array_equal(read_image_checked(path, fmt), read_image(str(path), fmt)), fmt


@pytest.mark.parametrize(
    "values, mode, what",
    [
        (RNG.random((4, 5), dtype=np.float32), "F", "32-bit float"),
        (RNG.integers(-1000, 100_000, (4, 5)).astype(np.int32), "I", "32-bit integer"),
    ],
)
def test_images_without_a_0_255_range_are_refused(tmp_path, values, mode, what):
    path = tmp_path / f"{mode}.tif"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == mode
    with pytest.raises(DatasetError) as info:
        read_image_checked(path, "RGB")
    assert str(info.value) == (
        f"cannot read image {path}: PIL mode {mode!r} ({what} pixels) has no defined 0-255 range; "
        "save the image with 8-bit or 16-bit unsigned samples (e.g. PNG)"
    )


def test_truncated_16bit_png_names_the_file(tmp_path):
    for channels in (None, 3):
        ok, encoded = cv2.imencode(".png", uint16_image(64, 64, channels))
        path = tmp_path / f"truncated_{channels}.png"
        path.write_bytes(encoded.tobytes()[:3000])
        with pytest.raises(DatasetError, match="cannot read image " + re.escape(str(path)) + ": OSError"):
            read_image_checked(path, "RGB")
