"""Resolved hyperparameters -> a compiled ``keras.Model``.

Every model takes raw RGB pixels (float 0..255, shape ``(size, size, 3)``) and outputs class
probabilities; the backbone's own preprocessing is inside the model, so a saved fold model
predicts from plain images with nothing else to remember.

**Unfrozen layers** mean the same for every backbone: count the backbone's layers that hold
weights (convolutions, dense, normalisation layers; not activations, pooling or additions),
from the top; the last ``unfrozen_layers`` of them train, the rest stay frozen. ``0`` trains the
head alone (feature extraction), ``-1`` the whole backbone. BatchNormalization layers always stay
frozen (and so run in inference mode, keeping their ImageNet statistics): fine-tuning them on
small medical batches is the classic way to wreck a pretrained network. A randomly initialised
backbone (``weights: none``) always trains whole.

**Weights**: ``imagenet`` uses Keras' normal download and cache (``$KERAS_HOME/models``);
``none`` starts from random weights; a file path loads that file (the offline route: no
download, no hash check).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import urllib.error
from pathlib import Path
from typing import Any

import keras
import numpy as np

from automl.config.backbones import CUSTOM_CNN, CUSTOM_RESNET, Backbone, get_backbone
from automl.config.space import WEIGHTS_IMAGENET, WEIGHTS_NONE
from automl.errors import AutoMLError
from automl.files import atomic_write

logger = logging.getLogger(__name__)

# ImageNet channel means in BGR order, as keras.applications' "caffe" preprocess_input uses.
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype="float32")

# Keras' default 0.99 needs hundreds of steps before the moving statistics match the weights;
# small medical sets give a few dozen steps per epoch, and validation scores swing wildly.
_BN_MOMENTUM = 0.9

_OPTIMIZERS = {
    "adam": "Adam",
    "adamw": "AdamW",
    "sgd": "SGD",
    "rmsprop": "RMSprop",
    "lion": "Lion",
}


class WeightsUnavailableError(AutoMLError):
    """ImageNet weights could not be downloaded (offline machine) and are not cached."""


def build_model(
    params: dict[str, Any],
    *,
    n_classes: int,
    image_size: int,
    jit_compile: str = "auto",
) -> keras.Model:
    """Build and compile the classifier a trial's hyperparameters describe."""
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    spec = params["backbone"]
    entry = get_backbone(spec["name"])
    if entry.name == CUSTOM_CNN:
        features = _custom_cnn(inputs, spec)
    elif entry.name == CUSTOM_RESNET:
        features = _custom_resnet(inputs, spec)
    else:
        x = _preprocess(inputs, entry)
        weights = spec.get("weights", WEIGHTS_IMAGENET)
        backbone = _application(entry, weights, image_size)
        # A randomly initialised backbone has nothing worth freezing.
        unfrozen = -1 if weights == WEIGHTS_NONE else int(spec.get("unfrozen_layers", -1))
        _set_trainable(backbone, unfrozen)
        features = backbone(x)
    x = features
    for i, layer in enumerate(params["head"]["layers"]):
        x = keras.layers.Dense(int(layer["units"]), name=f"head_dense_{i}")(x)
        if params["head"]["batchnorm"]:
            x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"head_bn_{i}")(x)
        x = keras.layers.Activation("relu", name=f"head_relu_{i}")(x)
        if layer["dropout"] > 0:
            x = keras.layers.Dropout(float(layer["dropout"]), name=f"head_dropout_{i}")(x)
    # float32 output keeps softmax stable under a mixed-precision policy.
    outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")(x)
    model = keras.Model(inputs, outputs, name=f"automl_{entry.name}")
    model.compile(
        optimizer=build_optimizer(params),
        loss=keras.losses.CategoricalCrossentropy(
            label_smoothing=float(params["label_smoothing"])
        ),
        metrics=["accuracy"],
        jit_compile={"auto": "auto", "on": True, "off": False}[jit_compile],
    )
    return model


def build_optimizer(params: dict[str, Any]) -> keras.optimizers.Optimizer:
    """The optimizer with the trial's learning rate, its own parameters and weight averaging.

    ``ema.momentum > 0`` switches on the optimizer's own exponential moving average of the
    weights (``use_ema``); ``schedules.WeightAveraging`` puts the averaged weights into the model
    for validation and saving. The learning rate stays a plain number here: the schedules set it
    step by step (``schedules.py`` says why), so a saved model loads in safe mode anywhere.
    """
    spec = dict(params["optimizer"])
    name = spec.pop("name")
    if name == "lion" and not spec.get("weight_decay"):
        spec.pop("weight_decay", None)  # Keras wants None, not 0, for "no decay"
    momentum = float(params.get("ema", {}).get("momentum", 0.0))
    if momentum > 0:
        spec.update(use_ema=True, ema_momentum=momentum)
    cls = getattr(keras.optimizers, _OPTIMIZERS[name])
    return cls(learning_rate=float(params["learning_rate"]), **spec)


def count_parameters(model: keras.Model) -> dict[str, int]:
    """Total and trainable parameter counts."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return {"total": int(model.count_params()), "trainable": trainable}


def save_model(model: keras.Model, path: Path) -> None:
    """Save ``model`` (``.keras``) atomically: a killed process never leaves half a model."""
    atomic_write(Path(path), model.save)


def latency_ms(model: keras.Model, batch: np.ndarray, runs: int = 10) -> float:
    """Median wall time in ms of predicting ``batch`` (one image: batch 1), after a warm-up."""
    sample = batch.astype("float32")
    model.predict_on_batch(sample)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model.predict_on_batch(sample)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000.0)


def ensure_weights(backbone_name: str, weights: str, image_size: int) -> None:
    """Build the backbone once so that Keras downloads and caches its ImageNet weights.

    Called before the first trial, so an offline machine fails at once with the manual route
    instead of failing every trial.
    """
    entry = get_backbone(backbone_name)
    if weights == WEIGHTS_NONE or not entry.pretrainable:
        return
    _application(entry, weights, image_size)
    keras.backend.clear_session()


def _application(entry: Backbone, weights: str, image_size: int) -> keras.Model:
    constructor = getattr(keras.applications, entry.constructor)
    kwargs: dict[str, Any] = {
        "include_top": False,
        "input_shape": (image_size, image_size, 3),
        "pooling": "avg",
        "weights": None if weights == WEIGHTS_NONE else weights,
    }
    if entry.preprocessing == "builtin":
        kwargs["include_preprocessing"] = True
    try:
        # Keras prints its download progress on stdout, which belongs to automl's results
        # (tables, CSV paths); it is progress, so it goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            return constructor(**kwargs)
    except Exception as exc:  # Keras raises plain Exception on URL fetch failure
        if weights != WEIGHTS_IMAGENET:
            raise AutoMLError(
                f"space.backbone.{entry.name}.weights: could not load '{weights}' into "
                f"{entry.constructor}: {exc}. The file must hold {entry.constructor} weights "
                "without the top (include_top=False)."
            ) from exc
        if not _is_download_failure(exc):
            raise  # a real error of ours or of Keras: never reported as "offline"
        keras_home = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
        cache = keras_home / "models" / entry.weights_file
        raise WeightsUnavailableError(
            f"space.backbone.{entry.name}.weights: ImageNet weights for {entry.constructor} "
            f"could not be downloaded ({str(exc).splitlines()[0][:160]}). On a machine with "
            f"network, Keras caches them at {cache}; copy that file here to the same place, or "
            "set weights: /path/to/that/file, or weights: none."
        ) from exc


# What keras.utils.get_file raises when the weights cannot be fetched or arrive damaged.
_DOWNLOAD_MESSAGES = ("URL fetch failure", "Incomplete or corrupted file detected")


def _is_download_failure(exc: BaseException) -> bool:
    if isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError)):
        return True
    return str(exc).startswith(_DOWNLOAD_MESSAGES)


def _set_trainable(backbone: keras.Model, unfrozen_layers: int) -> None:
    weighted = [layer for layer in backbone.layers if layer.weights]
    first_trainable = 0 if unfrozen_layers < 0 else max(len(weighted) - unfrozen_layers, 0)
    trainable_ids = {id(layer) for layer in weighted[first_trainable:]}
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = id(layer) in trainable_ids and not isinstance(
            layer, keras.layers.BatchNormalization
        )


def _preprocess(inputs: Any, entry: Backbone) -> Any:
    if entry.preprocessing == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_pm1")(inputs)
    if entry.preprocessing == "caffe":
        # RGB -> BGR and minus the ImageNet means as one frozen Dense on the channel axis: plain
        # Keras layers, so a saved model loads in safe mode without custom objects.
        layer = keras.layers.Dense(3, name="caffe_preprocess", trainable=False)
        x = layer(inputs)
        permutation = np.eye(3, dtype="float32")[:, ::-1]
        layer.set_weights([permutation, -_CAFFE_MEAN_BGR])
        return x
    return inputs


def _custom_cnn(inputs: Any, spec: dict[str, Any]) -> Any:
    """Plain CNN: ``blocks`` x (conv -> [batchnorm] -> relu -> maxpool -> [dropout]).

    Filters double each block from ``filters``; global average pooling (or flattening, with
    ``pooling: flatten``) feeds the head.
    """
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale_to_unit")(inputs)
    for block in range(int(spec["blocks"])):
        x = keras.layers.Conv2D(
            int(spec["filters"]) * 2**block,
            int(spec["kernel_size"]),
            padding="same",
            use_bias=not spec["batchnorm"],
            kernel_initializer=spec["initializer"],
            name=f"conv_{block}",
        )(x)
        if spec["batchnorm"]:
            x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"bn_{block}")(x)
        x = keras.layers.Activation("relu", name=f"relu_{block}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool_{block}")(x)
        if spec["dropout"] > 0:
            x = keras.layers.Dropout(float(spec["dropout"]), name=f"dropout_{block}")(x)
    if spec.get("pooling", "avg") == "flatten":
        return keras.layers.Flatten(name="flatten")(x)
    return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _custom_resnet(inputs: Any, spec: dict[str, Any]) -> Any:
    """A ResNet of basic blocks (He et al., 2016) sized for small images.

    The stem is one 3x3 convolution at ``stem_stride`` with no max-pooling: ImageNet ResNets
    quarter the input in the stem (7x7 stride 2 + pool), which leaves a 28 px cell 7 px wide
    before the first block. ``stages`` stages of ``blocks_per_stage`` blocks follow; each stage
    after the first halves the resolution and doubles the width (``width`` in the first). A
    block is conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU; the last BN of each block
    starts at zero, so every block starts as the identity and deep stacks train from the first
    epoch (Goyal et al., 2017). Where the shape changes, the shortcut average-pools and then
    applies a 1x1 convolution + BN (ResNet-D, He et al., 2019) instead of a strided 1x1
    convolution, which ignores three pixels in four. (It also avoids a heap corruption that
    TensorFlow 2.21's oneDNN kernels cause on CPU in the gradient of strided 1x1 convolutions
    in this network: test processes aborted with the strided shortcut, never with this one.)
    """
    width, stride = int(spec["width"]), int(spec["stem_stride"])
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale_to_unit")(inputs)
    x = _conv_bn(x, width, 3, stride, name="stem")
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    for stage in range(int(spec["stages"])):
        filters = width * 2**stage
        for block in range(int(spec["blocks_per_stage"])):
            x = _basic_block(x, filters, 2 if stage > 0 and block == 0 else 1, f"s{stage}b{block}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if spec["dropout"] > 0:
        x = keras.layers.Dropout(float(spec["dropout"]), name="features_dropout")(x)
    return x


def _basic_block(x: Any, filters: int, stride: int, name: str) -> Any:
    shortcut = x
    if stride != 1:
        shortcut = keras.layers.AveragePooling2D(
            stride, padding="same", name=f"{name}_shortcut_pool"
        )(shortcut)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(shortcut, filters, 1, 1, name=f"{name}_shortcut")
    y = _conv_bn(x, filters, 3, stride, name=f"{name}_conv1")
    y = keras.layers.Activation("relu", name=f"{name}_relu1")(y)
    y = _conv_bn(y, filters, 3, 1, name=f"{name}_conv2", zero_gamma=True)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=f"{name}_relu2")(y)


def _conv_bn(
    x: Any, filters: int, kernel: int, stride: int, *, name: str, zero_gamma: bool = False
) -> Any:
    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )(x)
    return keras.layers.BatchNormalization(
        momentum=_BN_MOMENTUM,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=f"{name}_bn",
    )(x)
