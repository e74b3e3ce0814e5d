"""The ``augment`` config section: presets and their order against YAML and ``--set``,
the ``where: model`` refusals, the range rules, and saving."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from tljob.config import ConfigError, JobConfig, dump_config, load_config
from tljob.config.augment import MODEL_SIDE_OPTIONS, AugmentSection


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def augment(*overrides: str) -> AugmentSection:
    return load_config(None, ["data.source=/x", *overrides]).augment


def test_the_default_is_off():
    section = augment()
    assert section.preset == "none" and section.where == "data" and section.seed is None
    assert not section.active and section.options_set() == {}
    assert section.zoom_bounds == (1.0, 1.0) and not section.soft_labels
    assert augment("augment.preset=none") == section


def test_seed_preset_is_the_classic_image_data_generator_recipe():
    section = augment("augment.preset=seed")
    assert section.options_set() == {
        "rotation_range": 40.0,
        "width_shift_range": 0.2,
        "height_shift_range": 0.2,
        "shear_range": 0.2,
        "zoom_range": 0.2,
        "horizontal_flip": True,
    }
    assert section.fill_mode == "nearest" and section.zoom_bounds == (0.8, 1.2)
    assert not section.vertical_flip and not section.random_resized_crop.enabled


def test_light_preset():
    section = augment("augment.preset=light")
    assert section.options_set() == {"random_resized_crop.enabled": True, "horizontal_flip": True}
    assert section.random_resized_crop.scale == (0.5, 1.0)
    assert section.random_resized_crop.ratio == (3 / 4, 4 / 3)


def test_randaugment_preset():
    section = augment("augment.preset=randaugment")
    assert section.options_set() == {
        "random_resized_crop.enabled": True,
        "horizontal_flip": True,
        "randaugment.num_ops": 2,
        "random_erasing.probability": 0.25,
    }
    assert section.randaugment.magnitude == 9
    assert section.random_resized_crop.scale == (0.08, 1.0)


def test_options_written_on_top_of_a_preset_override_it():
    section = augment("augment.preset=seed", "augment.rotation_range=10", "augment.cval=9")
    assert section.rotation_range == 10.0 and section.cval == 9.0
    assert section.shear_range == 0.2 and section.horizontal_flip  # still the preset's
    # A nested option keeps the rest of the preset's sub-section.
    light = augment("augment.preset=light", "augment.random_resized_crop.scale=[0.3, 0.9]")
    assert light.random_resized_crop.enabled and light.random_resized_crop.scale == (0.3, 0.9)
    # Turning a preset's option off is an override too.
    assert not augment("augment.preset=seed", "augment.horizontal_flip=false").horizontal_flip


def test_set_over_yaml_over_preset_over_defaults(tmp_path):
    path = write(
        tmp_path,
        """
        data: {source: /x}
        augment: {preset: seed, rotation_range: 20, zoom_range: [0.9, 1.3], vertical_flip: true}
        """,
    )
    section = load_config(path, ["augment.rotation_range=5"]).augment
    assert section.rotation_range == 5.0  # --set over YAML
    assert section.zoom_range == (0.9, 1.3) and section.vertical_flip  # YAML over preset
    assert section.shear_range == 0.2  # the preset over the default
    assert section.channel_shift_range == 0.0  # the default
    # Another preset from --set fills only what the file leaves out.
    light = load_config(path, ["augment.preset=light"]).augment
    assert light.rotation_range == 20.0 and light.vertical_flip  # written in YAML
    assert light.shear_range == 0.0 and light.random_resized_crop.enabled  # light's, not seed's


@pytest.mark.parametrize(
    ("override", "option", "shown"),
    [
        ("augment.shear_range=5", "shear_range", "5.0"),
        ("augment.random_resized_crop.enabled=true", "random_resized_crop.enabled", "True"),
        ("augment.randaugment.num_ops=2", "randaugment.num_ops", "2"),
        ("augment.color_jitter.saturation=0.4", "color_jitter.saturation", "0.4"),
        ("augment.random_erasing.probability=0.5", "random_erasing.probability", "0.5"),
        ("augment.channel_shift_range=20", "channel_shift_range", "20.0"),
    ],
)
def test_where_model_refuses_what_the_model_cannot_run(override, option, shown):
    with pytest.raises(ConfigError) as err:
        augment("augment.where=model", override)
    assert str(err.value) == (
        f"invalid config:\n  `augment.{option}` ({shown}) cannot run inside the model "
        "(`augment.where` is 'model': Keras preprocessing layers, which only do "
        f"{', '.join(MODEL_SIDE_OPTIONS)}): turn it off, or set `augment.where` to 'data'"
    )


def test_where_model_refuses_a_preset_that_needs_the_data_side():
    with pytest.raises(ConfigError) as err:
        augment("augment.where=model", "augment.preset=seed")
    assert "`augment.shear_range` (0.2) cannot run inside the model" in str(err.value)


def test_where_model_accepts_what_the_model_runs():
    section = augment(
        "augment.where=model",
        "augment.rotation_range=30",
        "augment.width_shift_range=0.1",
        "augment.zoom_range=0.2",
        "augment.horizontal_flip=true",
        "augment.fill_mode=reflect",
        "augment.brightness_range=[0.8, 1.2]",
        "augment.color_jitter.contrast=0.3",
        "augment.mixup_alpha=0.2",  # a batch operation: always on the data side
    )
    assert section.where == "model" and section.soft_labels


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "augment.zoom_range=[1.2, 0.8]",
            "`augment.zoom_range` ([1.2, 0.8]): the first bound must be <= the second",
        ),
        (
            "augment.zoom_range=1.0",
            "`augment.zoom_range` (1.0): a single zoom range must be >= 0 and < 1",
        ),
        (
            "augment.zoom_range=[0, 1]",
            "`augment.zoom_range` ([0, 1]): zoom factors must be > 0",
        ),
        (
            "augment.brightness_range=[1.5, 0.5]",
            "`augment.brightness_range` ([1.5, 0.5]): the first bound must be <= the second",
        ),
        (
            "augment.brightness_range=[-0.5, 1]",
            "`augment.brightness_range` ([-0.5, 1]): bounds must be >= 0.0",
        ),
        (
            "augment.random_resized_crop.scale=[0, 1]",
            "`augment.random_resized_crop.scale` ([0, 1]): the area fraction must be > 0",
        ),
        (
            "augment.random_resized_crop.scale=[0.5, 1.5]",
            "`augment.random_resized_crop.scale` ([0.5, 1.5]): bounds must be >= 0.0 and <= 1.0",
        ),
        (
            "augment.random_resized_crop.ratio=[2, 1]",
            "`augment.random_resized_crop.ratio` ([2, 1]): the first bound must be <= the second",
        ),
        (
            "augment.random_resized_crop.ratio=[0, 1]",
            "`augment.random_resized_crop.ratio` ([0, 1]): the aspect ratio must be > 0",
        ),
        (
            "augment.preset=heavy",
            "`augment.preset` ('heavy'): Input should be 'none', 'seed', 'light' or 'randaugment'",
        ),
    ],
)
def test_range_rules_name_field_value_and_rule(override, message):
    with pytest.raises(ConfigError) as err:
        augment(override)
    assert str(err.value) == f"invalid config:\n  {message}"


def test_the_zoom_bounds_of_each_form():
    assert augment("augment.zoom_range=0.25").zoom_bounds == (0.75, 1.25)
    assert augment("augment.zoom_range=[0.5, 1.0]").zoom_bounds == (0.5, 1.0)
    # [1, 1] is no zoom: not an option that is on.
    assert "zoom_range" not in augment("augment.zoom_range=[1, 1]").options_set()


@pytest.mark.parametrize(
    "overrides",
    [
        ["augment.preset=seed"],
        ["augment.preset=seed", "augment.horizontal_flip=false", "augment.fill_mode=wrap"],
        ["augment.preset=light", "augment.random_resized_crop.ratio=[0.5, 2.0]"],
        ["augment.preset=randaugment", "augment.seed=3", "augment.cutmix_alpha=1.0"],
        ["augment.zoom_range=[0.7, 1.1]", "augment.brightness_range=[0.9, 1.1]"],
    ],
)
def test_a_saved_config_reads_back_equal(tmp_path, overrides):
    job = load_config(None, ["data.source=/x", *overrides])
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(job))
    written = yaml.safe_load(saved.read_text())["augment"]
    assert written["preset"] == job.augment.preset
    assert set(written) == set(AugmentSection.model_fields)  # every option written out
    again = load_config(saved)
    assert again.augment == job.augment
    assert again.record() == job.record()
    assert JobConfig.model_validate(job.record()).augment == job.augment


def test_docs_reference_lists_every_augment_option():
    page = Path(__file__).resolve().parents[1] / "docs" / "pages" / "reference" / "config.md"
    reference = page.read_text()
    names = []
    for name, field in AugmentSection.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            names += [f"{name}.{inner}" for inner in sub.model_fields]
        else:
            names.append(name)
    assert len(names) == 28
    missing = [name for name in names if f"| `augment.{name}` |" not in reference]
    assert missing == []
