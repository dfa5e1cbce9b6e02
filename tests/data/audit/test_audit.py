"""The data audit on real blood-cell crops with planted problems of known answer."""

from __future__ import annotations

import ast
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import AUDIT_KEYS, make_audit_layout, make_folder_layout, write_study_yaml
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from automl.cli.main import app
from automl.config.schema import Config, config_from_dict, load_config
from automl.data.audit import checks as audit
from automl.data.audit.checks import AuditOptions, find_duplicates, read_exclude, replace_groups
from automl.data.audit.fingerprints import compute_features, hash_candidates
from automl.data.audit.matching import confirm_pairs
from automl.data.audit.report import run_audit, write_reports
from automl.data.readers import ImageSet
from automl.errors import ConfigError, DataError
from automl.search.paths import paths_for
from automl.search.session import prepare_splits

runner = CliRunner()

_REASON = {
    "unreadable": "unreadable",
    "channels": "channels",
    "size": "size",
    "exact": "exact_duplicate",
    "near": "near_duplicate",
    "conflict": "label_conflict",
    "outlier": "outlier",
}


@pytest.fixture(scope="module")
def planted(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("audit") / "cells"
    truth = make_audit_layout(shared_data, root)
    data = config_from_dict({"data": {"format": "folder", "path": str(root), "n_folds": 2}}).data
    return root, truth, run_audit(data, seed=3)


def _found(result, reason: str) -> set[str]:
    flagged = result.flagged
    return set(flagged.id[flagged.reasons.str.split(";").apply(lambda r: reason in r)])


@pytest.mark.parametrize("key", [k for k in AUDIT_KEYS if k != "clean"])
def test_each_detector_finds_what_was_planted(planted, key: str) -> None:
    _, truth, result = planted
    found = _found(result, _REASON[key])
    assert truth[key] <= found, f"missed {sorted(truth[key] - found)}"
    if key != "outlier":  # the gray image is an outlier too (colourless among stained cells)
        assert found == truth[key], f"extra {sorted(found - truth[key])}"


def test_clean_distinct_images_are_not_flagged(planted) -> None:
    _, truth, result = planted
    assert not truth["clean"] & set(result.flagged.id)
    assert _found(result, "outlier") - truth["outlier"] <= truth["channels"]


def test_groups_link_each_copy_to_its_original_only(planted) -> None:
    _, truth, result = planted
    rows = result.flagged[result.flagged.group != ""]
    groups = rows.groupby("group").id.apply(set)
    near = {i for i in truth["near"] if "_" in i.rsplit("/", 1)[1].replace("BloodImage_", "")}
    assert all(len(members) <= 3 for members in groups)  # no chaining of distinct cells
    for copy in near:
        (members,) = [m for m in groups if copy in m]
        assert len(members) == 2
    conflict = rows[rows.reasons.str.contains("label_conflict")]
    assert conflict.group.nunique() == 1 and set(conflict.label) == {"Eosinophil", "Lymphocyte"}
    assert result.summary["groups_with_conflicting_labels"] == 1


def test_summary_counts_classes_and_small_classes(planted) -> None:
    _, _, result = planted
    summary = result.summary
    assert summary["readable"] == summary["images"] - 1
    assert set(summary["classes"]) == {"Eosinophil", "Lymphocyte", "Neutrophil"}
    assert summary["imbalance_ratio"] == pytest.approx(
        max(summary["classes"].values()) / min(summary["classes"].values())
    )
    assert summary["classes_too_small_for_folds"] == []


def test_unreadable_file_suggested_for_exclusion(planted) -> None:
    _, _, result = planted
    row = result.flagged.set_index("id").loc["Eosinophil/junk"]
    assert row.exclude and "not a recognised image format" in row.detail


def test_leakage_counts_exactly_the_planted_copies_across_the_hold_out(
    shared_data: Path, tmp_path: Path
) -> None:
    # A separate data.test folder fixes the sides: 2 re-encoded copies of tuning crops planted in
    # it leak; a copy of a test crop inside the test folder and one inside the pool do not.
    crops = shared_data / "bccd_wbc_crops" / "BCCD_cropped"
    pool, test = tmp_path / "pool", tmp_path / "test"
    originals = {}
    for name in ("Eosinophil", "Lymphocyte", "Neutrophil"):
        files = sorted((crops / name).glob("*.jpg"))[::3]  # BCCD repeats frames of one smear
        for folder, chosen in ((pool, files[:8]), (test, files[8:11])):
            (folder / name).mkdir(parents=True)
            for file in chosen:
                shutil.copy2(file, folder / name / file.name)
        originals[name] = files

    def copy(source: Path, target: Path) -> None:
        with Image.open(source) as image:
            image.convert("RGB").save(target, quality=80)  # re-encoded: not byte-identical

    copy(originals["Eosinophil"][0], test / "Eosinophil" / "leak_a.jpg")
    copy(originals["Neutrophil"][1], test / "Neutrophil" / "leak_b.jpg")
    copy(originals["Lymphocyte"][9], test / "Lymphocyte" / "within_test.jpg")
    copy(originals["Lymphocyte"][2], pool / "Lymphocyte" / "within_pool.jpg")
    data = config_from_dict(
        {
            "data": {
                "format": "folder",
                "path": str(pool),
                "test": {"format": "folder", "path": str(test)},
                "n_folds": 2,
            }
        }
    ).data
    result = run_audit(data, seed=0)
    n_test = 3 * 3 + 3
    assert result.summary["leakage"]["holdout_groups"] == 2
    assert result.summary["leakage"]["holdout_images_affected"] == 2
    assert result.summary["leakage"]["holdout_share_affected"] == pytest.approx(2 / n_test, 1e-3)
    flagged = result.flagged
    leaked = set(flagged.id[flagged.reasons.str.split(";").apply(lambda r: "leakage" in r)])
    assert {"Eosinophil/leak_a", "Neutrophil/leak_b"} <= leaked
    assert not {"Lymphocyte/within_test", "Lymphocyte/within_pool"} & leaked


def test_hash_search_is_robust_to_transforms_and_verification_separates(shared_data) -> None:
    files = sorted((shared_data / "bccd_wbc_crops" / "BCCD_cropped" / "Neutrophil").glob("*"))
    original = Image.open(files[0]).convert("RGB")
    variants = [
        original,
        original.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        original.transpose(Image.Transpose.TRANSPOSE),
        original.resize((original.width // 2, original.height // 2)),
        original.rotate(4, Image.Resampling.BICUBIC),
    ]
    others = [Image.open(f).convert("RGB") for f in files[3:30:3]]
    images = variants + others
    features = compute_features(len(images), lambda i: images[i].copy())
    pairs = {tuple(p) for p in hash_candidates(features.hashes, 8)}
    assert {(0, 1), (0, 2), (0, 3)} <= pairs  # flips, 90-degree turns, resizing: the hash
    assert not any(b >= len(variants) for _, b in pairs)  # rotations: the verification below
    turned = np.array([[0, 1], [0, 4]] + [[0, len(variants) + k] for k in range(len(others))])
    matches = confirm_pairs(features, turned)
    assert matches.confirmed[:2].all() and not matches.confirmed[2:].any()
    assert matches.similarity[:2].min() > 0.9


def test_cli_audit_writes_reports_and_prints_summary(planted, tmp_path: Path) -> None:
    root, truth, _ = planted
    out = tmp_path / "report"
    result = runner.invoke(app, ["audit", "--data", str(root), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "duplicates: 7 groups" in result.stdout
    assert "1 with conflicting labels" in result.stdout
    table = pd.read_csv(out / "audit.csv", keep_default_na=False)
    assert {"id", "file", "reasons", "group", "exclude"} <= set(table.columns)
    assert truth["unreadable"] <= set(table.id)
    summary = json.loads((out / "audit.json").read_text())
    assert summary["images"] == len(list(root.rglob("*.*")))
    page = (out / "audit.html").read_text()
    assert page.count("data:image/png;base64,") >= 17 and "<script" not in page
    # The data is only read.
    assert (root / "Eosinophil" / "junk.jpg").is_file()


def test_cli_audit_needs_exactly_one_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "--no-progress"])
    assert result.exit_code == 2
    assert "exactly one of --space FILE or --data PATH" in result.stderr


def test_cli_audit_space_defaults_to_study_folder(tmp_path: Path, shared_data: Path) -> None:
    data = make_folder_layout(shared_data, tmp_path / "cells", per_class=8)
    space = write_study_yaml(tmp_path / "cells.yaml", data, tmp_path / "studies")
    result = runner.invoke(app, ["audit", "--space", str(space), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "studies" / "cells" / "audit" / "audit.html").is_file()
    assert "splits:     holdout_fraction 0.25, 2 folds, seed 7" in result.stdout


# --- acting on it: data.exclude, data.groups_from_duplicates, tune's cheap checks ---------------


def _copies_layout(shared_data: Path, root: Path) -> dict[str, str]:
    """Real crops plus a resized copy of each of 4 Neutrophils; returns copy id -> original id."""
    make_folder_layout(shared_data, root, per_class=10)
    copies = {}
    for file in sorted((root / "Neutrophil").glob("*.jpg"))[:4]:
        with Image.open(file) as image:
            image.resize((image.width * 2 // 3, image.height * 2 // 3)).save(
                root / "Neutrophil" / f"{file.stem}_small.jpg", quality=85
            )
        copies[f"Neutrophil/{file.stem}_small"] = f"Neutrophil/{file.stem}"
    return copies


def _config(tmp_path: Path, root: Path, extra: str = ""):
    space = write_study_yaml(tmp_path / "s.yaml", root, tmp_path / "studies")
    text = space.read_text().replace(
        "  holdout_fraction: 0.25\n", f"  holdout_fraction: 0.25\n{extra}"
    )
    space.write_text(text)
    return load_config(space)


def test_groups_from_duplicates_keeps_each_copy_with_its_original(
    tmp_path: Path, shared_data: Path
) -> None:
    copies = _copies_layout(shared_data, tmp_path / "cells")

    def sides(config) -> dict[str, str]:
        splits = prepare_splits(config)
        out = {str(i): "holdout" for i in splits.holdout.ids}
        for k, (_, validation) in enumerate(splits.folds):
            out.update({str(i): f"fold {k}" for i in splits.tuning.ids[validation]})
        return out

    grouped = sides(_config(tmp_path, tmp_path / "cells", "  groups_from_duplicates: true\n"))
    assert all(grouped[c] == grouped[o] for c, o in copies.items())
    plain = sides(_config(tmp_path, tmp_path / "cells"))
    assert any(plain[c] != plain[o] for c, o in copies.items())  # what grouping prevents
    assert set(plain) == set(grouped)


def test_exclude_leaves_out_the_listed_images(tmp_path: Path, shared_data: Path) -> None:
    copies = _copies_layout(shared_data, tmp_path / "cells")
    listed = tmp_path / "exclude.csv"
    pd.DataFrame(
        {"id": list(copies) + ["Eosinophil/nothing"], "exclude": [True] * 4 + [False]}
    ).to_csv(listed, index=False)
    config = _config(tmp_path, tmp_path / "cells", f"  exclude: {listed}\n")
    splits = prepare_splits(config)
    kept = set(map(str, splits.tuning.ids)) | set(map(str, splits.holdout.ids))
    assert not kept & set(copies) and set(copies.values()) <= kept
    text = tmp_path / "exclude.txt"
    text.write_text("# leave out\n" + str(tmp_path / "cells" / "Neutrophil" / "x.jpg") + "\n")
    assert "Neutrophil/x" in read_exclude(text) and "x" in read_exclude(text)


def test_exclude_and_grouping_keys_are_validated(tmp_path: Path, shared_data: Path) -> None:
    root = make_folder_layout(shared_data, tmp_path / "cells", per_class=4)
    with pytest.raises(ConfigError, match="data.exclude must be a CSV or TXT file"):
        _config(tmp_path, root, "  exclude: missing.csv\n")
    with pytest.raises(ConfigError, match="data.groups_from_duplicates must be true or false"):
        _config(tmp_path, root, "  groups_from_duplicates: maybe\n")
    config = _config(tmp_path, root, "  groups_from_duplicates: true\n")
    assert config_from_dict(config.to_dict()).data == config.data


def test_tune_refuses_an_exact_copy_under_another_label(tmp_path: Path, shared_data: Path) -> None:
    root = make_folder_layout(shared_data, tmp_path / "cells", per_class=6)
    source = sorted((root / "Eosinophil").glob("*.jpg"))[0]
    shutil.copy2(source, root / "Lymphocyte" / "moved.jpg")
    with pytest.raises(DataError, match=r"different labels: .*moved.*automl audit"):
        prepare_splits(_config(tmp_path, root))
    # Excluding the copy lets the same data through.
    (tmp_path / "drop.txt").write_text("Lymphocyte/moved\n")
    assert prepare_splits(_config(tmp_path, root, f"  exclude: {tmp_path / 'drop.txt'}\n"))


def test_tune_warns_about_leakage(tmp_path: Path, shared_data: Path, caplog) -> None:
    _copies_layout(shared_data, tmp_path / "cells")
    with caplog.at_level("WARNING", logger="automl.data.audit.checks"):
        prepare_splits(_config(tmp_path, tmp_path / "cells"))
    assert "Possible leakage" in caplog.text and "groups_from_duplicates" in caplog.text


REPO = Path(__file__).resolve().parents[3]


def _quickstart(tmp_path: Path) -> Config:
    raw = yaml.safe_load((REPO / "search_spaces" / "quickstart.yaml").read_text())
    raw["study"]["studies_dir"] = str(tmp_path / "studies")
    return config_from_dict(raw, source="quickstart.yaml")


def test_tune_does_not_warn_about_leakage_on_the_quickstart_digits(tmp_path: Path, caplog):
    # Digits of one writer look alike (the hash put 32 hold-out images in "near-duplicate"
    # groups), but no two scans are copies of each other.
    with caplog.at_level("WARNING", logger="automl.data.audit.checks"):
        prepare_splits(_quickstart(tmp_path))
    assert "Possible leakage" not in caplog.text


def test_tune_warns_about_copies_planted_among_the_digits(tmp_path: Path, caplog) -> None:
    digits = load_digits()
    images = (digits.images * 15).astype(np.uint8)
    rng = np.random.default_rng(3)
    picked = rng.choice(len(images), 40, replace=False)
    noise = rng.integers(-2, 3, size=(20, 8, 8))
    copies = np.concatenate(
        [images[picked[:20], :, ::-1], np.clip(images[picked[20:]] + noise, 0, 255)]
    ).astype(np.uint8)
    path = tmp_path / "digits.npz"
    np.savez(
        path,
        images=np.concatenate([images, copies]),
        labels=np.concatenate([digits.target, digits.target[picked]]),
    )
    raw = yaml.safe_load((REPO / "search_spaces" / "quickstart.yaml").read_text())
    raw["study"]["studies_dir"] = str(tmp_path / "studies")
    raw["data"].update(format="npz", path=str(path))
    with caplog.at_level("WARNING", logger="automl.data.audit.checks"):
        splits = prepare_splits(config_from_dict(raw, source="digits.npz"))
    assert "Possible leakage" in caplog.text
    # Only the planted pairs are grouped: the flagged share is at most theirs.
    held_out = len(splits.holdout.ids)
    shown = float(caplog.text.split("hold-out images (")[1].split("%")[0])
    assert shown <= 100 * 40 / held_out


def test_workers_read_the_screening_from_the_image_cache(
    tmp_path: Path, shared_data: Path, monkeypatch
) -> None:
    _copies_layout(shared_data, tmp_path / "cells")
    grouped = _config(tmp_path, tmp_path / "cells", "  groups_from_duplicates: true\n")
    paths_for(grouped).root.mkdir(parents=True)  # an existing study reads the image cache
    calls: list[int] = []
    fingerprint = audit.compute_features

    def counted(*args, **kwargs):
        calls.append(len(calls))
        return fingerprint(*args, **kwargs)

    monkeypatch.setattr(audit, "compute_features", counted)
    first = prepare_splits(grouped)
    assert len(calls) == 1
    # What every worker process does before its trial: the images and the screening are read.
    second = prepare_splits(grouped)
    assert len(calls) == 1
    assert first.to_dict() == second.to_dict()
    assert len(list(paths_for(grouped).data_cache.rglob("screening-*.npz"))) == 1
    # Other screening settings are screened (once) and kept beside the first.
    plain = _config(tmp_path, tmp_path / "cells")
    prepare_splits(plain)
    prepare_splits(plain)
    assert len(calls) == 2
    assert len(list(paths_for(plain).data_cache.rglob("screening-*.npz"))) == 2


def test_find_duplicates_without_augmented_search(planted) -> None:
    root, _, _ = planted
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "junk.jpg")
    features = compute_features(len(files), lambda i: Image.open(files[i]))
    quick = find_duplicates(features, AuditOptions(), augmented=False)
    # copy + PNG + relabelled copy; q40, small, flip and rot90 by hash; rot7+shift needs more.
    assert quick.links == {"exact": 3, "near": 4}


def test_write_reports_is_atomic_and_complete(planted, tmp_path: Path) -> None:
    _, _, result = planted
    paths = write_reports(result, tmp_path / "deep" / "out")
    assert sorted(p.name for p in (tmp_path / "deep" / "out").iterdir()) == sorted(
        p.name for p in paths.values()
    )
    written = json.loads(paths["json"].read_text())
    assert written["images"] == result.summary["images"] and written["splits"]


@pytest.mark.parametrize("failing", ["audit.csv", "audit.json", "audit.html"])
def test_a_report_write_that_fails_midway_leaves_no_half_written_file(
    planted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    _, _, result = planted
    out = tmp_path / "out"
    write_reports(result, out)  # the reports of an earlier audit
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    newer = dataclasses.replace(result, summary={**result.summary, "seconds": -1.0})
    started: list[Path] = []

    # A full disk halfway through one file: half its bytes reach the disk, then an error.
    real_write, real_csv = Path.write_text, pd.DataFrame.to_csv

    def half_then_fail(path: Path, text: str) -> None:
        started.append(Path(path))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    def write_text(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        if self.name == failing or self.name.startswith(f".{failing}."):
            half_then_fail(self, text)
        return real_write(self, text, *args, **kwargs)

    def to_csv(frame: pd.DataFrame, target: Any = None, *args: Any, **kwargs: Any) -> Any:
        name = "" if target is None else Path(target).name
        if name == failing or name.startswith(f".{failing}."):
            half_then_fail(Path(target), real_csv(frame, None, *args, **kwargs))
        return real_csv(frame, target, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    with pytest.raises(OSError, match="No space left on device"):
        write_reports(newer, out)
    monkeypatch.undo()

    assert started and started[0].parent == out  # the failure did hit a half-written file
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(after) == sorted(before)  # no temporary or partial file left behind
    assert after[failing] == before[failing]  # the earlier report, whole, not half a new one
    json.loads(after["audit.json"])
    pd.read_csv(out / "audit.csv")


def test_duplicate_groups_merge_with_existing_groups() -> None:
    pool = ImageSet(
        images=np.zeros((5, 1, 1, 3), dtype=np.uint8),
        labels=np.zeros(5, dtype=np.int64),
        class_names=("a",),
        ids=np.array(["p", "q", "r", "s", "t"]),
        groups=np.array(["smear1", "smear1", "smear2", "smear3", "smear4"]),
    )
    # q and r are copies: smear1 and smear2 become one group; s and t stay apart.
    merged = replace_groups(pool, np.array([-1, 0, 0, -1, -1])).groups
    assert merged[0] == merged[1] == merged[2]
    assert len({merged[0], merged[3], merged[4]}) == 3


# --- precision on real single-cell crops: chula_rbc12, where look-alikes abound ---------------

CHULA_WINDOW = 72  # edge of every chula_rbc12 crop in its 640x480 smear
CHULA_FIELD_GROUPS = range(300, 400)  # ~3,200 crops of 100 smears, including two joined fields


def _chula_overlap_shifts(chula: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """The builder's same-field smear pairs: (A, B) -> (dx, dy) taking B's coordinates to A's."""
    tree = ast.parse((chula / "build_chula_rbc12_crops.py").read_text())
    (listed,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "OVERLAP_PAIRS"
    ]
    shifts = {}
    for a, b, dy, dx in listed:
        shifts[(a, b)] = (dx, dy)
        shifts[(b, a)] = (-dx, -dy)
    return shifts


def _chula_copy(image: Image.Image, kind: str) -> tuple[Image.Image, int]:
    """A re-encoded, resized, flipped, rotated or shifted copy, and its JPEG quality."""
    copies = {
        "reencode": (image, 40),
        "smaller": (image.resize((43, 43), Image.Resampling.BICUBIC), 90),
        "larger": (image.resize((108, 108), Image.Resampling.BICUBIC), 90),
        "flip": (image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 90),
        "rot90": (image.transpose(Image.Transpose.ROTATE_90), 90),
        "rotate": (image.rotate(-15, Image.Resampling.BICUBIC), 90),
        "shift": (image.rotate(0, translate=(6, -5)), 90),
        "augment": (
            image.rotate(10, Image.Resampling.BILINEAR, translate=(-4, 3)).transpose(
                Image.Transpose.FLIP_TOP_BOTTOM
            ),
            85,
        ),
    }
    return copies[kind]


@pytest.fixture(scope="module")
def chula_planted(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """100 smears of chula_rbc12 plus 16 planted copies; their fingerprints and groups."""
    chula = shared_data / "chula_rbc12"
    manifest = pd.read_csv(chula / "manifest.csv")
    crops = manifest[manifest.field_group.isin(CHULA_FIELD_GROUPS)].reset_index(drop=True)
    crops["smear"] = crops.source_image.str.extract(r"(\d+)\.jpg", expand=False)
    files = [chula / f for f in crops.file]
    origin = list(range(len(files)))  # the crop each file shows (a copy: its original)
    folder = tmp_path_factory.mktemp("chula_copies")
    kinds = ("reencode", "smaller", "larger", "flip", "rot90", "rotate", "shift", "augment")
    picked = np.random.default_rng(14).choice(len(crops), 2 * len(kinds), replace=False)
    for k, original in enumerate(picked):
        with Image.open(files[original]) as image:
            copy, quality = _chula_copy(image.convert("RGB"), kinds[k % len(kinds)])
        files.append(folder / f"{k:02d}_{kinds[k % len(kinds)]}.jpg")
        copy.save(files[-1], quality=quality)
        origin.append(int(original))
    features = compute_features(len(files), lambda i: Image.open(files[i]))
    duplicates = find_duplicates(features)
    return crops, np.array(origin), duplicates


def test_chula_groups_only_overlapping_windows_and_copies(shared_data: Path, chula_planted):
    crops, origin, duplicates = chula_planted
    shifts = _chula_overlap_shifts(shared_data / "chula_rbc12")
    grouped = [np.asarray(m) for m in duplicates.members()]
    assert grouped, "the planted copies at least must be grouped"
    wrong = []
    for members in grouped:
        for a, b in zip(*np.triu_indices(len(members), 1), strict=True):
            first, second = crops.iloc[origin[members[a]]], crops.iloc[origin[members[b]]]
            if first.name == second.name:  # a planted copy and its original
                continue
            dx, dy = (0, 0) if first.smear == second.smear else (None, None)
            if dx is None:
                dx, dy = shifts.get((first.smear, second.smear), (10**6, 10**6))
            if (
                abs(first.crop_left - second.crop_left - dx) >= CHULA_WINDOW
                or abs(first.crop_top - second.crop_top - dy) >= CHULA_WINDOW
            ):
                wrong.append((first.file, second.file))
    # Different cells of one stain share a hash and an outline, never their surroundings.
    assert not wrong, f"{len(wrong)} pairs of different cells grouped, e.g. {wrong[:3]}"


def test_chula_planted_copies_are_all_found(chula_planted) -> None:
    crops, origin, duplicates = chula_planted
    copies = np.arange(len(crops), len(origin))
    group = duplicates.group
    missed = [int(c) for c in copies if group[c] < 0 or group[c] != group[origin[c]]]
    assert not missed, f"copies {missed} (of {len(copies)}) not grouped with their original"


def test_a_bug_in_the_fingerprints_is_raised_not_reported_as_unreadable_files(
    shared_data, monkeypatch
) -> None:
    import automl.data.audit.fingerprints

    files = sorted((shared_data / "bccd_wbc_crops" / "BCCD_cropped" / "Neutrophil").glob("*"))[:3]

    def broken(rgb):
        raise TypeError("fingerprint bug")

    monkeypatch.setattr(automl.data.audit.fingerprints, "_fingerprint", broken)
    with pytest.raises(TypeError, match="fingerprint bug"):
        compute_features(len(files), lambda i: Image.open(files[i]))
