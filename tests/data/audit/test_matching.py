"""Confirming candidate pairs on real images: copies pass, look-alike cells of one smear do not."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from automl.data.audit.fingerprints import compute_features
from automl.data.audit.matching import MatchThresholds, confirm_pairs, hash_orientations

WINDOW = 72  # chula_rbc12 crop edge


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _copies(original: Image.Image) -> dict[str, Image.Image]:
    return {
        "q40": _jpeg(original, 40),
        "smaller": original.resize((43, 43), Image.Resampling.BICUBIC),
        "flip": original.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        "rot90": original.transpose(Image.Transpose.ROTATE_90),
        "rotate": _jpeg(original.rotate(22, Image.Resampling.BICUBIC), 90),
        "shift": _jpeg(original.rotate(0, translate=(-9, 7)), 90),
        "augment": _jpeg(
            original.rotate(-17, Image.Resampling.BILINEAR, translate=(5, 4)).transpose(
                Image.Transpose.FLIP_LEFT_RIGHT
            ),
            85,
        ),
    }


def test_copies_are_confirmed_in_the_orientation_the_hash_gives(shared_data: Path) -> None:
    files = sorted((shared_data / "chula_rbc12" / "04_target_cell").glob("*.jpg"))[:3]
    images: list[Image.Image] = []
    for file in files:
        with Image.open(file) as image:
            original = image.convert("RGB")
        images += [original, *_copies(original).values()]
    features = compute_features(len(images), lambda i: images[i].copy())
    per = 1 + len(_copies(images[0]))
    pairs = np.array([[o, o + k] for o in range(0, len(images), per) for k in range(1, per)])
    oriented = confirm_pairs(
        features, pairs, orientation=hash_orientations(features.hashes, pairs)
    )
    flips = confirm_pairs(features, pairs)  # the 4 flips, no quarter turns
    names = list(_copies(images[0]))
    rot90 = np.array([names[k % (per - 1)] == "rot90" for k in range(len(pairs))])
    found = oriented.confirmed | flips.confirmed
    assert found.all(), [names[k % (per - 1)] for k in np.flatnonzero(~found)]
    assert oriented.confirmed[rot90].all() and not flips.confirmed[rot90].any()
    assert np.nanmax(np.where(found, np.fmin(oriented.residual, flips.residual), 0)) < 0.5


def test_a_rotated_copy_of_a_wide_picture_with_black_fill(shared_data: Path) -> None:
    # 160x120 pictures: the thumbnail keeps their aspect ratio, so a rotation stays a rotation.
    files = sorted((shared_data / "bccd_wbc_aug" / "images" / "TEST_SIMPLE").glob("*/*.jpg"))
    with Image.open(files[0]) as image:
        original = image.convert("RGB")
    images = [original, _jpeg(original.rotate(18, Image.Resampling.BILINEAR), 90)]
    images += [Image.open(f).convert("RGB") for f in files[1:6]]
    features = compute_features(len(images), lambda i: images[i].copy())
    matches = confirm_pairs(features, np.array([[0, k] for k in range(1, len(images))]))
    assert matches.confirmed.tolist() == [True] + [False] * (len(images) - 2)


@pytest.mark.parametrize("smear", ["82", "305"])
def test_look_alike_cells_of_one_smear_are_not_confirmed(shared_data: Path, smear: str) -> None:
    # Smear 82: isolated round spherocytes on a bare background, the closest look-alikes of
    # the whole set; smear 305: crowded normal cells. Only windows that overlap may match.
    chula = shared_data / "chula_rbc12"
    manifest = pd.read_csv(chula / "manifest.csv")
    crops = manifest[manifest.source_image == f"Dataset/{smear}.jpg"].reset_index(drop=True)
    features = compute_features(len(crops), lambda i: Image.open(chula / crops.file[i]))
    pairs = np.stack(np.triu_indices(len(crops), 1), axis=1)
    matches = confirm_pairs(features, pairs, MatchThresholds())
    left, top = crops.crop_left.to_numpy(), crops.crop_top.to_numpy()
    overlap = (np.abs(left[pairs[:, 0]] - left[pairs[:, 1]]) < WINDOW) & (
        np.abs(top[pairs[:, 0]] - top[pairs[:, 1]]) < WINDOW
    )
    wrong = pairs[matches.confirmed & ~overlap]
    assert not len(wrong), [(crops.file[a], crops.file[b]) for a, b in wrong]
    assert (matches.similarity[~overlap] >= 0.8).any()  # the outlines do match: look-alikes
