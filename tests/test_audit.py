"""The data audit on real blood-cell crops with planted problems of known answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import AUDIT_KEYS, make_audit_layout, make_folder_layout, write_study_yaml
from PIL import Image
from typer.testing import CliRunner

from automl.audit import AuditOptions, find_duplicates, read_exclude, replace_groups
from automl.audit_report import run_audit, write_reports
from automl.cli import app
from automl.config import config_from_dict, load_config
from automl.data import ImageSet
from automl.errors import ConfigError, DataError
from automl.hashing import compute_features, hash_candidates
from automl.matching import confirm_pairs
from automl.tune import prepare_splits

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


def test_leakage_share_matches_the_groups_across_the_split(planted) -> None:
    _, _, result = planted
    leak = result.summary["leakage"]
    sides = result.flagged[result.flagged.group != ""].groupby("group").side.apply(set)
    crossing = [s for s in sides if "holdout" in s and len(s) > 1]
    assert leak["holdout_groups"] == len(crossing)
    assert 0.0 <= leak["holdout_share_affected"] <= 1.0


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
    with caplog.at_level("WARNING", logger="automl.audit"):
        prepare_splits(_config(tmp_path, tmp_path / "cells"))
    assert "Possible leakage" in caplog.text and "groups_from_duplicates" in caplog.text


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
