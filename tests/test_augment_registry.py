"""The augmentation ops registry (``tljob.augment.ops``): its order and draw streams as
published, its checks on import, the unknown-name refusal, and that the section's
options, "which options are on" and the in-model layers all come from the ops."""

from __future__ import annotations

import numpy as np
import pytest

from tljob.augment import geometry, keys, ops
from tljob.augment.geometry import GeometryParams
from tljob.augment.ops import GEOMETRY_OPS, REGISTRY, check_registry
from tljob.augment.ops.base import AugmentOp, BatchOp, GeometryOp, PixelOp, StreamUse
from tljob.augment.photometric import Photometric
from tljob.augment.pipeline import Augmenter
from tljob.config.augment import MODEL_SIDE_OPTIONS, AugmentSection
from tljob.errors import UserError

EVERYTHING = AugmentSection(
    rotation_range=10.0,
    width_shift_range=0.1,
    height_shift_range=0.1,
    shear_range=5.0,
    zoom_range=0.1,
    horizontal_flip=True,
    vertical_flip=True,
    brightness_range=(0.8, 1.2),
    channel_shift_range=10.0,
    random_resized_crop={"enabled": True},
    color_jitter={"contrast": 0.2, "saturation": 0.2, "hue": 0.05},
    random_erasing={"probability": 0.3},
    randaugment={"num_ops": 2},
    mixup_alpha=0.2,
    cutmix_alpha=1.0,
)


def test_the_registry_order_is_the_order_ops_apply_in():
    assert [op.name for op in REGISTRY] == [
        "random_resized_crop",
        "rotation",
        "shift",
        "shear",
        "zoom",
        "flip",
        "brightness",
        "channel_shift",
        "color_jitter",
        "randaugment",
        "random_erasing",
        "mixup_cutmix",
    ]
    assert [op.place for op in GEOMETRY_OPS] == ["source"] + ["centred"] * 4 + ["output"]


def test_every_op_keeps_its_draw_stream():
    # A view is a function of these: changing one changes every view of that op.
    uses = {op.name: [(u.stream, u.first, u.count) for u in op.streams] for op in REGISTRY}
    assert uses == {
        "random_resized_crop": [(0x6E02, 0, 40)],
        "rotation": [(0x6E01, 0, 1)],
        "shift": [(0x6E01, 1, 2)],
        "shear": [(0x6E01, 3, 1)],
        "zoom": [(0x6E01, 4, 2)],
        "flip": [(0x6E01, 6, 2)],
        "brightness": [(101, 0, 1)],
        "channel_shift": [(102, 0, 1)],
        "color_jitter": [(103, 0, 3)],
        "randaugment": [(104, 0, None)],
        "random_erasing": [(105, 0, 41), (106, 0, None)],
        "mixup_cutmix": [(201, 0, None)],
    }


def test_a_column_of_a_stream_is_the_same_whatever_the_call_asks_for():
    ids = np.arange(20, dtype=np.uint64)
    whole = keys.uniforms(3, 2, ids, 8, 0x6E01)
    np.testing.assert_array_equal(keys.uniforms(3, 2, ids, 2, 0x6E01, first=4), whole[:, 4:6])
    np.testing.assert_array_equal(StreamUse(0x6E01, 6, 2).uniforms(3, 2, ids), whole[:, 6:])
    with pytest.raises(ValueError, match="stream 0x68 is open: say how many columns"):
        StreamUse(104).uniforms(3, 2, ids)


def test_an_unknown_op_name_is_refused_with_the_valid_ones():
    assert ops.get("zoom") is REGISTRY[4]
    with pytest.raises(ops.UnknownAugmentOpError) as err:
        ops.get("rotate")
    assert isinstance(err.value, UserError)  # the CLI's exit 2
    assert str(err.value) == (
        "unknown augmentation op 'rotate': the ops are random_resized_crop, rotation, shift, "
        "shear, zoom, flip, brightness, channel_shift, color_jitter, randaugment, "
        "random_erasing, mixup_cutmix"
    )


class _Copy(PixelOp):
    """A pixel op for the registry checks: its name, fields and stream are given."""

    draws = ()

    def __init__(
        self, name: str, fields: tuple[str, ...], stream: StreamUse, draws: tuple[str, ...] = ()
    ) -> None:
        self.name, self.fields, self.streams = name, dict.fromkeys(fields), (stream,)
        self.draws = draws


def _with(extra: PixelOp) -> list[AugmentOp]:
    """The registry with ``extra`` as its last pixel op."""
    return [*REGISTRY[:-1], extra, REGISTRY[-1]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            _Copy("brightness", ("gamma",), StreamUse(900)),
            "augment ops brightness and brightness both have the name brightness",
        ),
        (
            _Copy("gamma", ("brightness_range",), StreamUse(900)),
            "augment ops brightness and gamma both have the field brightness_range",
        ),
        (
            _Copy("gamma", ("gamma",), StreamUse(900), draws=("boxes",)),
            "augment ops random_erasing and gamma both have the parameter boxes",
        ),
        (
            _Copy("gamma", ("gamma",), StreamUse(0x6E01, first=7, count=3)),
            "augment ops flip and gamma both draw from stream 0x6e01 (the same columns): "
            "give gamma its own",
        ),
        (
            _Copy("gamma", ("gamma",), StreamUse(106, first=5, count=1)),
            "augment ops random_erasing and gamma both draw from stream 0x6a (the same "
            "columns): give gamma its own",
        ),
    ],
)
def test_the_registry_check_refuses_a_second_owner(extra, message):
    check_registry(_with(_Copy("gamma", ("gamma",), StreamUse(0x6E01, first=8, count=3))))
    with pytest.raises(ValueError) as err:
        check_registry(_with(extra))
    assert str(err.value) == message


def test_the_registry_check_refuses_a_misplaced_or_missing_op():
    good = _Copy("gamma", ("gamma",), StreamUse(900))
    with pytest.raises(ValueError, match="listed geometry first, then pixel, then batch"):
        check_registry([good, *REGISTRY])
    with pytest.raises(ValueError, match=r"one geometry op must pick the source box, not \[\]"):
        check_registry(REGISTRY[1:])
    second = BatchOp()
    second.name, second.fields, second.streams = "label_smoothing", {}, (StreamUse(901),)
    with pytest.raises(ValueError) as err:
        check_registry([*REGISTRY, second])
    assert str(err.value) == (
        "one batch op at most (labels become soft once), not ['mixup_cutmix', 'label_smoothing']"
    )


def test_the_section_is_the_ops_fields_and_the_section_wide_settings():
    shared = {"preset", "where", "seed", "fill_mode", "cval"}
    assert set(AugmentSection.model_fields) == shared | set(ops.config_fields())
    owners = {name: op.name for op in REGISTRY for name in op.fields}
    # every option that is on belongs to the op that says it is on
    for op in REGISTRY[:-1]:
        for option in op.options_on(EVERYTHING):
            assert owners[option.split(".")[0]] == op.name
    assert list(EVERYTHING.options_set()) == [
        "rotation_range",
        "width_shift_range",
        "height_shift_range",
        "shear_range",
        "zoom_range",
        "horizontal_flip",
        "vertical_flip",
        "brightness_range",
        "channel_shift_range",
        "random_resized_crop.enabled",
        "color_jitter.contrast",
        "color_jitter.saturation",
        "color_jitter.hue",
        "random_erasing.probability",
        "randaugment.num_ops",
    ]


@pytest.mark.parametrize("op", REGISTRY[:-1], ids=lambda op: op.name)
def test_one_op_on_turns_on_its_stage_only(op):
    """``options_on`` is the one answer to "is it on": the section's options, the
    Augmenter's geometry and the photometric stage follow it."""
    written = EVERYTHING.model_dump()
    section = AugmentSection.model_validate({name: written[name] for name in op.fields})
    assert section.options_set() == op.options_on(EVERYTHING)
    assert section.active and not section.soft_labels
    augmenter = Augmenter(section, 16, seed=0)
    assert augmenter.geometric == (op.kind == "geometry")
    assert Photometric(section).active == (op.kind == "pixel")


def test_where_model_runs_exactly_the_ops_that_have_a_layer():
    assert MODEL_SIDE_OPTIONS == (
        "rotation_range",
        "width_shift_range",
        "height_shift_range",
        "zoom_range",
        "horizontal_flip",
        "vertical_flip",
        "fill_mode",
        "cval",
        "brightness_range",
        "color_jitter.contrast",
    )
    for op in REGISTRY:
        assert {o.split(".")[0] for o in op.model_side} <= set(op.fields)
        layer = op.model_layer(EVERYTHING, 64)
        assert (layer is not None) == bool(op.model_side), op.name


def test_a_new_geometry_op_warps_unless_it_says_otherwise():
    params = GeometryParams.fixed(3)
    assert not GeometryOp().without_warp(params).any()  # the safe default: warp
    assert all(op.without_warp(params).all() for op in GEOMETRY_OPS)  # neutral: no warp
    with pytest.raises(NotImplementedError):
        AugmentOp().options_on(EVERYTHING)


def test_parameters_are_read_by_name_and_unknown_names_are_refused():
    params = geometry.draw(EVERYTHING, 0, 0, np.arange(4, dtype=np.uint64), 40, 32)
    assert params.box.shape == (4, 4) and params.flip_h.dtype == bool and len(params) == 4
    with pytest.raises(AttributeError, match="GeometryParams has no parameter 'angle'"):
        _ = params.angle
    with pytest.raises(TypeError, match=r"no geometry op draws \['angle'\]"):
        GeometryParams.fixed(1, angle=3.0)
    drawn = Photometric(EVERYTHING).draw(np.arange(4, dtype=np.uint64), 0, 0, 32, 32)
    assert drawn.contrast.shape == (4,) and drawn.ops.shape == (4, 2)
    with pytest.raises(AttributeError, match="no pixel op draws 'gamma'"):
        _ = drawn.gamma
    off = Photometric(AugmentSection(brightness_range=(0.5, 1.5)))
    assert off.draw(np.arange(2, dtype=np.uint64), 0, 0, 8, 8).boxes is None
