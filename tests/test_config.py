"""The config schema: defaults fill in, the shipped configs validate, bad values name their key."""

import json

import pytest

from astroflow import config


def test_shipped_configs_validate():
    demo = config.load_config("config/config.yaml")
    tiny = config.load_config("config/config.yaml", "config/tiny.yaml")
    assert demo["train"]["models"] == ["kim_brunner"]
    assert tiny["instrument"]["bands"] == ["g", "r", "i"]
    # tiny overrides only what it names
    assert tiny["reduce"] == demo["reduce"]


def test_defaults_filled_from_schema():
    cfg = config.validate({})
    assert cfg["seed"] == 42
    assert cfg["train"]["split"]["cell_arcsec"] > 0
    assert cfg["tracking"]["uri"].startswith("sqlite:///")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"train": {"max_epochs": -1}}, "train.max_epochs"),
        ({"train": {"optimizer": "rmsprop"}}, "train.optimizer"),
        ({"reduce": {"cutout_size": "big"}}, "reduce.cutout_size"),
        ({"reduce": {"detection_band": "y"}}, "reduce.detection_band"),
        ({"train": {"crop_size": 64}}, "train.crop_size"),
        ({"evaluate": {"mag_bins": [20, 19]}}, "evaluate.mag_bins"),
        ({"simulate": {"mag_bright": 26.0}}, "simulate.mag_bright"),
        ({"tranin": {}}, "tranin"),
    ],
)
def test_bad_value_names_key(override, key):
    with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
        config.validate(override)


def test_from_json_round_trip_and_hash_is_order_free():
    cfg = config.validate({"seed": 7})
    again = config.from_json(json.dumps(cfg))
    assert again == cfg
    reordered = dict(reversed(list(cfg.items())))
    assert config.config_hash(reordered) == config.config_hash(cfg)
    assert config.config_hash({**cfg, "seed": 8}) != config.config_hash(cfg)


def test_invalid_json_is_a_config_error():
    with pytest.raises(config.ConfigError, match="not valid JSON"):
        config.from_json("{seed: 1")


def _schema_leaves(schema, prefix=""):
    for key, sub in schema.get("properties", {}).items():
        name = f"{prefix}{key}"
        yield name, sub
        if sub.get("type") == "object":
            yield from _schema_leaves(sub, prefix=f"{name}.")


def test_every_schema_key_has_description_and_default():
    for name, sub in _schema_leaves(config.load_schema()):
        assert "default" in sub, f"{name}: no default in the schema"
        if "." not in name or sub.get("type") != "object":
            assert sub.get("description"), f"{name}: no description in the schema"


def test_schema_defaults_equal_the_shipped_default_config():
    """config/config.yaml is the default: an empty config must resolve to the same values."""
    import yaml

    with open("config/config.yaml") as fh:
        shipped = yaml.safe_load(fh)
    assert config.validate({}) == config.validate(shipped)
