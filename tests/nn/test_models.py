"""Model building: backbones, unfrozen-layer meaning, preprocessing, weights routes."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from conftest import real_image_array

from automl.config.schema import config_from_dict
from automl.config.space import parse_space
from automl.nn.models import WeightsUnavailableError, build_model, ensure_weights


def _params(backbone: dict, **extra) -> dict:
    space = {"backbone": backbone, "head": {"layers": 1, "units": 16}, **extra}
    config = config_from_dict(
        {"data": {"format": "digits", "image_size": 32}, "space": space}, default_name="m"
    )
    return config.space.suggest(optuna.trial.FixedTrial({}))


def _backbone_of(model: keras.Model) -> keras.Model:
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


# MobileNetV3Small's last weighted layers, from the top (Keras' own architecture, written out
# here so that the test does not re-derive what it checks).
_TOP_OF_MOBILENET = [
    "conv_1_bn",
    "conv_1",
    "expanded_conv_10_project_bn",
    "expanded_conv_10_project",
    "expanded_conv_10_squeeze_excite_conv_1",
    "expanded_conv_10_squeeze_excite_conv",
]


@pytest.mark.parametrize(
    ("unfrozen", "changed"),
    [
        (0, set()),
        (5, {"conv_1", "expanded_conv_10_project", "expanded_conv_10_squeeze_excite_conv_1"}),
        (-1, None),  # None: every weighted layer but BatchNormalization
    ],
)
def test_unfrozen_layers_are_the_top_weighted_layers_and_only_they_train(
    tmp_path: Path, shared_data: Path, unfrozen: int, changed: set[str] | None
) -> None:
    # A weights file is the pretrained route (weights: none always trains everything).
    source = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    path = tmp_path / "mobilenet.weights.h5"
    source.save_weights(path)
    backbone_spec = {
        "name": "mobilenetv3_small",
        "weights": str(path),
        "unfrozen_layers": unfrozen,
    }
    model = build_model(_params(backbone_spec), n_classes=3, image_size=32)
    backbone = _backbone_of(model)
    weighted = [layer for layer in backbone.layers if layer.weights]
    assert [layer.name for layer in weighted[::-1][:6]] == _TOP_OF_MOBILENET
    before = {layer.name: [w.numpy().copy() for w in layer.weights] for layer in weighted}
    images, labels = real_image_array(shared_data, 32, per_class=4)
    model.fit(images.astype("float32"), keras.utils.to_categorical(labels, 3), epochs=2, verbose=0)
    moved = {
        layer.name
        for layer in weighted
        if any(
            not np.array_equal(a, b.numpy())
            for a, b in zip(before[layer.name], layer.weights, strict=True)
        )
    }
    # BatchNormalization never moves, not even its statistics: it runs in inference mode.
    if changed is None:
        changed = {
            layer.name
            for layer in weighted
            if not isinstance(layer, keras.layers.BatchNormalization)
        }
    # Exactly these layers are handed to the optimizer...
    optimised = {id(w) for w in model.trainable_weights}
    handed = {layer.name for layer in weighted if any(id(w) in optimised for w in layer.weights)}
    assert handed == changed
    # ...no other layer moves, and most of them do: from random weights a few can get exactly
    # zero gradients in two epochs (hard-swish saturation), so "all" cannot be asked of them.
    assert moved <= changed and len(moved) >= 0.6 * len(changed)
    assert model.get_layer("head_dense_0").trainable


def test_caffe_preprocessing_matches_keras_preprocess_input(shared_data: Path) -> None:
    images, _ = real_image_array(shared_data, 32, per_class=1)
    params = _params({"name": "vgg16", "weights": "none"})
    model = build_model(params, n_classes=3, image_size=32)
    layer = model.get_layer("caffe_preprocess")
    ours = keras.Model(model.input, layer.output)(images.astype("float32"))
    expected = keras.applications.vgg16.preprocess_input(images.astype("float32"))
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-3)
    assert not layer.trainable


def test_a_local_weights_file_loads_without_download(tmp_path: Path, shared_data: Path) -> None:
    source = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    path = tmp_path / "mobilenet.weights.h5"
    source.save_weights(path)
    params = _params({"name": "mobilenetv3_small", "weights": str(path), "unfrozen_layers": 3})
    model = build_model(params, n_classes=3, image_size=32)
    loaded = _backbone_of(model)
    for a, b in zip(source.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    images, _ = real_image_array(shared_data, 32, per_class=2)
    probabilities = model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_imagenet_weights_offline_fail_with_the_manual_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CI and development machines reach package registries only, so Keras' download fails.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match=r"convnext_tiny_notop\.h5.*weights: none"):
        ensure_weights("convnext_tiny", "imagenet", 32)


def test_optimizers_take_their_own_parameters() -> None:
    for name, options in {
        "sgd": {"momentum": 0.8, "nesterov": True},
        "lion": {"weight_decay": 0.0},
        "adamw": {"weight_decay": 0.01},
        "rmsprop": {"rho": 0.8},
    }.items():
        params = _params(
            {"name": "custom_cnn", "blocks": 2, "filters": 4},
            optimizer={"name": name, **options},
            learning_rate=0.005,
        )
        model = build_model(params, n_classes=3, image_size=32)
        assert type(model.optimizer).__name__.lower() == name
        assert float(model.optimizer.learning_rate) == pytest.approx(0.005)


@pytest.mark.parametrize("size", [28, 48, 96])
def test_custom_resnet_builds_at_small_and_larger_sizes_and_trains(
    shared_data: Path, size: int
) -> None:
    space = parse_space(
        {
            "backbone": {"name": "custom_resnet", "stages": 3, "width": 8, "blocks_per_stage": 2},
            "head": {"layers": 0},
        },
        image_size=size,
    )
    params = space.suggest(optuna.trial.FixedTrial({}))
    keras.utils.set_random_seed(0)
    model = build_model(params, n_classes=3, image_size=size)
    # The stem keeps every pixel: the first stage works at the input resolution.
    assert model.get_layer("s0b0_add").output.shape[1:3] == (size, size)
    assert model.get_layer("s2b1_add").output.shape[1:3] == (-(-size // 4), -(-size // 4))
    assert model.get_layer("s2b1_add").output.shape[-1] == 32  # width doubles per stage
    assert len([layer for layer in model.layers if layer.name.endswith("_add")]) == 6
    # Where the resolution halves, the shortcut pools before its 1x1 convolution (ResNet-D).
    assert model.get_layer("s1b0_shortcut").strides == (1, 1)
    assert model.get_layer("s1b0_shortcut_pool").output.shape[1:3] == (-(-size // 2),) * 2
    images, labels = real_image_array(shared_data, size, per_class=6)
    y = keras.utils.to_categorical(labels, 3)
    before = model.evaluate(images.astype("float32"), y, verbose=0)[0]
    model.fit(images.astype("float32"), y, epochs=4, batch_size=6, verbose=0)
    after = model.evaluate(images.astype("float32"), y, verbose=0)[0]
    assert np.isfinite(after) and after < before


def test_custom_resnet_stem_stride_halves_the_first_stage() -> None:
    space = parse_space(
        {"backbone": {"name": "custom_resnet", "stages": 2, "width": 4, "stem_stride": 2}},
        image_size=48,
    )
    model = build_model(space.suggest(optuna.trial.FixedTrial({})), n_classes=3, image_size=48)
    assert model.get_layer("s0b0_add").output.shape[1:3] == (24, 24)


def test_only_a_failed_download_is_reported_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug (here: an argument the constructor does not take, as a Keras upgrade could cause)
    # must surface as itself, not as "offline".
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    original = keras.applications.ConvNeXtTiny

    def broken(**kwargs):
        return original(**kwargs, include_head=False)

    monkeypatch.setattr(keras.applications, "ConvNeXtTiny", broken)
    with pytest.raises(TypeError, match="include_head") as info:
        ensure_weights("convnext_tiny", "imagenet", 32)
    assert not isinstance(info.value, WeightsUnavailableError)
    assert "could not be downloaded" not in str(info.value)
