"""Where images come from: the ``data.source`` / ``data.test`` part of a study configuration.

Kept in its own tiny module so that the data readers and the configuration loader can share it
without importing each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

SOURCE_FORMATS = ("folder", "csv", "npz", "digits", "bloodmnist")
BLOODMNIST_SIZES = (28, 64, 128, 224)
MEDMNIST_SPLITS = ("train", "val", "test", "train+val")


@dataclass(frozen=True)
class DataSource:
    """One set of images: the training pool, a separate test set, or images to predict.

    Attributes:
        format: ``folder`` (one subfolder per class), ``csv`` (a CSV of ``id,label`` plus an image
            folder, the Kaggle layout), ``npz`` (arrays of images and labels), ``digits``
            (scikit-learn's bundled 8x8 digits, offline) or ``bloodmnist`` (official MedMNIST file,
            downloaded once and checked against its published MD5).
        path: folder root, CSV image folder, ``.npz`` file, or BloodMNIST cache folder.
        labels_csv: ``csv`` only: the CSV file with the id and label columns.
        id_column: ``csv`` only: column holding the image id.
        label_column: ``csv`` only: column holding the class label.
        extension: ``csv`` only: appended to the id to form the file name (e.g. ``.tif``).
        group_column: ``csv`` only: images sharing a value stay on one side of every split.
        images_key: ``npz`` only: the images array; ``None`` picks ``images`` or
            ``<split>_images``.
        labels_key: ``npz`` only: the labels array; ``None`` picks ``labels`` or
            ``<split>_labels``.
        split: ``npz``/``bloodmnist`` in the MedMNIST layout: ``train``, ``val``, ``test`` or
            ``train+val``.
        size: ``bloodmnist`` only: edge of the official file (28, 64, 128 or 224).
        url: ``bloodmnist`` only: download URL override (a mirror, or a local server in tests).
        class_names: names for label indices 0..C-1 (``npz``/``bloodmnist``/``digits``).
        on_unreadable: ``error`` stops with the list of unreadable files; ``skip`` leaves them
            out with a warning.
    """

    format: str
    path: str | None = None
    labels_csv: str | None = None
    id_column: str = "id"
    label_column: str = "label"
    extension: str = ""
    group_column: str | None = None
    images_key: str | None = None
    labels_key: str | None = None
    split: str = "train"
    size: int = 64
    url: str | None = None
    class_names: tuple[str, ...] | None = None
    on_unreadable: str = "error"

    def to_dict(self) -> dict[str, Any]:
        """Plain-YAML form (tuples become lists)."""
        out = asdict(self)
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataSource:
        """Inverse of :meth:`to_dict`; no validation (``schema.py`` validates user input)."""
        values = dict(values)
        if values.get("class_names") is not None:
            values["class_names"] = tuple(values["class_names"])
        return cls(**values)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The keys a YAML mapping may use."""
        return tuple(f.name for f in fields(cls))
