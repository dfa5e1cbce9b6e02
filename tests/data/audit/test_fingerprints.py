"""automl.data.audit.fingerprints through its API, on real blood-cell crops."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automl.data.audit.fingerprints import (
    DIHEDRAL,
    compute_features,
    dihedral_hashes,
    hamming,
    hash_candidates,
    hash_distance,
    valid_masks,
)


@pytest.fixture(scope="module")
def cells(shared_data: Path) -> list[Image.Image]:
    # Every fifth file: BCCD repeats frames of one smear under consecutive numbers.
    files = sorted((shared_data / "bccd_wbc_crops" / "BCCD_cropped" / "Neutrophil").glob("*"))
    return [Image.open(f).convert("RGB") for f in files[:100:5]]


def _reencoded(image: Image.Image, fmt: str, **options: object) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    buffer.seek(0)
    return Image.open(buffer)


def test_the_pixel_digest_is_equal_for_equal_pixels_whatever_the_format(
    cells: list[Image.Image],
) -> None:
    original = cells[0]
    images = [original, _reencoded(original, "PNG"), _reencoded(original, "JPEG", quality=90)]
    features = compute_features(len(images), lambda i: images[i].copy())
    assert features.digest[0] == features.digest[1]  # lossless: the same pixels
    assert features.digest[0] != features.digest[2]  # lossy: not an exact copy
    assert features.ok.all() and (features.width == original.width).all()


def test_the_eight_hashes_are_those_of_the_eight_orientations(cells: list[Image.Image]) -> None:
    gray = np.asarray(cells[1].convert("L").resize((32, 32)), dtype=np.float64)
    hashes = dihedral_hashes(gray)
    for k, (transpose, flip_rows, flip_columns) in enumerate(DIHEDRAL):
        turned = gray.T if transpose else gray
        turned = turned[::-1] if flip_rows else turned
        turned = turned[:, ::-1] if flip_columns else turned
        # The k-th hash is computed from one DCT by sign flips; it must equal the hash of the
        # actually transformed picture.
        assert hamming(hashes[k], dihedral_hashes(np.ascontiguousarray(turned))[0]) == 0


def test_copies_are_close_and_different_cells_far(cells: list[Image.Image]) -> None:
    original = cells[2]
    copies = [
        original.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        original.transpose(Image.Transpose.ROTATE_90),
        original.resize((original.width // 2, original.height // 2)),
        _reencoded(original, "JPEG", quality=70),
    ]
    images = [original, *copies, *cells[3:]]
    features = compute_features(len(images), lambda i: images[i].copy())
    to_copies = hash_distance(features.hashes, np.array([[0, j] for j in range(1, 5)]))
    others = np.array([[0, j] for j in range(5, len(images))])
    assert to_copies.max() <= 6
    assert np.median(hash_distance(features.hashes, others)) >= 12
    found = {tuple(p) for p in hash_candidates(features.hashes, 6)}
    assert {(0, 1), (0, 2), (0, 3), (0, 4)} <= found


def test_the_picture_mask_leaves_out_padding_of_a_wide_image(cells: list[Image.Image]) -> None:
    square = cells[4]
    wide = square.resize((square.width * 2, square.height))  # padded top and bottom in a thumb
    features = compute_features(2, lambda i: (square, wide)[i].copy())
    masks = valid_masks(features, np.array([0, 1]))
    assert masks[0].mean() > 0.95
    assert 0.4 < masks[1].mean() < 0.6
    assert not masks[1][0].any() and masks[1][32].all()  # padding rows vs the middle row


def test_an_undecodable_file_is_unreadable_with_its_reason(
    cells: list[Image.Image], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00\x01 not an image")
    loaders = [lambda: cells[0].copy(), lambda: Image.open(junk)]
    features = compute_features(2, lambda i: loaders[i]())
    assert features.ok.tolist() == [True, False]
    assert features.reason[1] == "not a recognised image format"
    assert features.hashes[1].sum() == 0 and features.thumbs[1].sum() == 0
