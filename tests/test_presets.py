"""Every preset is a recipe the scripts can read: no key that no script knows (a typo would be silently ignored)."""

import importlib
from dataclasses import fields

import pytest

import configurator
from model import GPTConfig

SCRIPTS = {"data": "", "train": "", "sft": "sft_", "eval": "eval_", "sample": ""}


def known_keys():
    keys = {f.name for f in fields(GPTConfig)}
    for name, prefix in SCRIPTS.items():
        module = importlib.import_module(name)
        own = {k for k, v in vars(module).items() if configurator._known_constant(k, v)}
        keys |= own | {prefix + k for k in own | keys if prefix}
    return keys


@pytest.mark.parametrize("preset", configurator.list_presets())
def test_every_preset_key_is_read_by_some_script(preset):
    unknown = sorted(set(configurator.load_preset(preset)) - known_keys())
    assert not unknown, f"config/{preset}.py sets keys no script reads: {unknown}"
