"""The backbone catalogue: names users write in YAML -> Keras application and its input needs.

Pure metadata, no Keras import, so that configuration checks (image size too small, unknown
name) run before TensorFlow is loaded. ``nn/models.py`` turns an entry into layers.

``preprocessing`` says what the raw 0..255 RGB input must become for that backbone:

- ``builtin``: the Keras application rescales/normalises inside itself (ConvNeXt,
  EfficientNetV2 and MobileNetV3 with ``include_preprocessing=True``);
- ``tf``: scale to [-1, 1] (ResNet V2);
- ``caffe``: RGB -> BGR and subtract the ImageNet channel means (VGG, ResNet V1);
- ``unit``: scale to [0, 1] (the custom CNN and the custom ResNet).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    """One entry of the catalogue.

    Attributes:
        name: the YAML name (``convnext_tiny``).
        constructor: attribute of ``keras.applications`` (``ConvNeXtTiny``); empty for the
            custom CNN and ResNet.
        preprocessing: ``builtin``, ``tf``, ``caffe`` or ``unit`` (see the module docstring).
        min_image_size: smallest input edge the application accepts.
        weights_file: file name Keras caches ImageNet weights under (``$KERAS_HOME/models/``),
            used only to tell users where to put the file for offline runs.
    """

    name: str
    constructor: str
    preprocessing: str
    min_image_size: int
    weights_file: str = ""

    @property
    def pretrainable(self) -> bool:
        """Whether ImageNet weights exist (everything but the custom CNN and ResNet)."""
        return bool(self.constructor)


CUSTOM_CNN = "custom_cnn"
CUSTOM_RESNET = "custom_resnet"

_ENTRIES = (
    Backbone("convnext_tiny", "ConvNeXtTiny", "builtin", 32, "convnext_tiny_notop.h5"),
    Backbone("convnext_small", "ConvNeXtSmall", "builtin", 32, "convnext_small_notop.h5"),
    Backbone("convnext_base", "ConvNeXtBase", "builtin", 32, "convnext_base_notop.h5"),
    Backbone(
        "efficientnetv2_b0",
        "EfficientNetV2B0",
        "builtin",
        32,
        "efficientnetv2-b0_notop.h5",
    ),
    Backbone(
        "efficientnetv2_b1",
        "EfficientNetV2B1",
        "builtin",
        32,
        "efficientnetv2-b1_notop.h5",
    ),
    Backbone(
        "efficientnetv2_s",
        "EfficientNetV2S",
        "builtin",
        32,
        "efficientnetv2-s_notop.h5",
    ),
    Backbone(
        "resnet50",
        "ResNet50",
        "caffe",
        32,
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    Backbone(
        "resnet50v2",
        "ResNet50V2",
        "tf",
        32,
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    Backbone(
        "mobilenetv3_small",
        "MobileNetV3Small",
        "builtin",
        32,
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    ),
    Backbone(
        "mobilenetv3_large",
        "MobileNetV3Large",
        "builtin",
        32,
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    ),
    Backbone("vgg16", "VGG16", "caffe", 32, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    Backbone(CUSTOM_CNN, "", "unit", 8),
    Backbone(CUSTOM_RESNET, "", "unit", 8),
)

CATALOGUE: dict[str, Backbone] = {entry.name: entry for entry in _ENTRIES}


def get_backbone(name: str) -> Backbone:
    """Look a backbone up by its YAML name; ``KeyError`` if unknown (callers word the error)."""
    return CATALOGUE[name]
