"""A measurement's settings: its own dataclass, the flat keywords as sugar that agrees with
it, run.json by name, and clear errors before training."""

import dataclasses
import json

import pytest

from conftest import toy_dataset
from layerwatch import Attention, Attribution, Dynamics, LayerwatchCallback, LayerwatchConfig
from layerwatch.measures import for_config, keyword_names, registered


def _with_settings():
    return {name: cls for name, cls in registered().items() if cls.Settings is not None}


def _non_default(cls):
    """Each field of ``cls`` given a value other than its default (and valid)."""
    values = {"examples": [1, 3], "split": "train", "steps": 5, "target": "prediction", "batch_size": 3, "top": 7,
              "confidence_threshold": 0.4, "variability_threshold": 0.3}
    out = {}
    for f in dataclasses.fields(cls):
        assert f.name in values, f"give the test a value for {cls.__name__}.{f.name}"
        assert values[f.name] != f.default
        out[f.name] = values[f.name]
    return out


@pytest.mark.parametrize("name", sorted(_with_settings()))
def test_flat_keywords_build_the_same_settings_as_the_measures_list(tmp_path, name):
    cls = registered()[name].Settings
    fields = _non_default(cls)
    flat = LayerwatchCallback({"train": toy_dataset(12)}, tmp_path / "a", progress=False,
                              **{name: True}, **{f"{name}_{k}": v for k, v in fields.items()})
    listed = LayerwatchCallback({"train": toy_dataset(12)}, tmp_path / "a", progress=False, measures=[cls(**fields)])
    assert flat.config == listed.config
    assert flat.config.measure(name) == cls(**fields)
    # run.json keeps them by name, and reads them back equal.
    stored = json.loads(json.dumps(flat.config.to_dict()))
    assert stored["measures"][name] == cls(**fields).to_dict()
    assert LayerwatchConfig.from_dict(stored) == flat.config
    # True alone is the defaults; the measurement built from the config holds them.
    on = LayerwatchCallback({"train": toy_dataset(12)}, tmp_path / "b", progress=False, **{name: True})
    assert on.config.measure(name) == cls()
    (built,) = [m for m in for_config(flat.config) if m.name == name]
    assert built.settings == cls(**fields)


def test_every_measurement_with_settings_has_flat_keywords():
    names = set(keyword_names())
    for name, cls in _with_settings().items():
        assert name in names
        assert {f"{name}_{f}" for f in cls.Settings.field_names()} <= names


def test_the_core_settings_hold_no_measurement_field():
    core = {f.name for f in dataclasses.fields(LayerwatchConfig)}
    for name, cls in _with_settings().items():
        assert name not in core
        assert not any(f"{name}_{f}" in core for f in cls.Settings.field_names())


def test_a_run_json_of_flat_keys_reads_as_measures():
    old = {"attention": True, "attention_examples": [2, 5], "attribution": False, "attribution_steps": 9,
           "dynamics": {"top": 4}, "method": "pca"}
    cfg = LayerwatchConfig.from_dict(old)
    assert cfg.measure("attention") == Attention(examples=(2, 5))
    assert cfg.measure("attribution") is None
    assert cfg.measure("dynamics") == Dynamics(top=4)
    assert cfg.method == "pca"


def test_keywords_with_a_config_replace_only_the_measurements_they_name(tmp_path):
    cfg = LayerwatchConfig(output_dir=str(tmp_path / "c"), measures=[Attention(examples=2), Dynamics(top=3)])
    watch = LayerwatchCallback({"train": toy_dataset(12)}, config=cfg, attention=False, attribution=True, progress=False)
    assert watch.config.measure("attention") is None
    assert watch.config.measure("dynamics") == Dynamics(top=3)
    assert watch.config.measure("attribution") == Attribution()
    replaced = LayerwatchCallback({"train": toy_dataset(12)}, config=cfg, measures=[Attribution(steps=4)], progress=False)
    assert [m.name for m in replaced.config.measures] == ["attribution"]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(attention_examples=3), ValueError, r"attention_examples given but attention is off; pass attention=True"),
        (dict(attention=False, attention_examples=3), ValueError, r"turns attention off, but its settings \['examples'\]"),
        (dict(measures=[Attention()], attention=True), ValueError, r"attention is given twice"),
        (dict(measures=[Attention(), Attention(examples=2)]), ValueError, r"names 'attention' twice"),
        (dict(measures=["attention"]), ValueError, r"measures\[0\]='attention' is not a measurement's settings"),
        (dict(attention={"exampels": 3}), ValueError, r"attention: unknown settings \['exampels'\]"),
        (dict(attribution=True, attribution_steps=1), ValueError, r"attribution_steps=1 must be at least 2"),
        (dict(atention=True), TypeError, r"'atention' \(did you mean 'attention'\?\)"),
    ],
)
def test_bad_measurement_settings_are_refused_when_the_callback_is_built(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        LayerwatchCallback({"train": toy_dataset(12)}, tmp_path / "lw", progress=False, **kwargs)


@pytest.mark.parametrize("name", sorted(_with_settings()))
def test_a_measurement_built_with_its_own_settings_holds_them(name):
    cls = registered()[name]
    settings = cls.Settings(**_non_default(cls.Settings))
    assert cls(LayerwatchConfig(), settings).settings == settings
    assert cls(LayerwatchConfig()).settings == cls.Settings()  # off in the config: the defaults
