"""Settings that were renamed so that their names say what they are. The old names are still read, with a warning
where a user wrote them (a config file, --set), silently where an older version of the code wrote them (a run's
config.yaml, a model's metrics.json): both mean the same setting."""

from __future__ import annotations

import warnings

RENAMED_KEYS = {"lr": "lr_per_128", "attack_step": "attack_step_size"}
RENAMED_VALUES = {("weight_init", "kaiming_fan_out"): "vgg"}
# Settings that runs written before the setting existed did not record, with the value those runs ran with: every
# network then took VGG16's initialisation. (Others they lack, such as warmup_epochs, ran at today's default.)
UNRECORDED = {"weight_init": "vgg"}


def renamed(values: dict, where: str | None = None) -> dict:
    """`values` with renamed settings under their new names; `where` (a file, --set) is warned about each. A
    setting given under both names is a ValueError: which one was meant cannot be known."""
    both = sorted(old for old, new in RENAMED_KEYS.items() if old in values and new in values)
    if both:
        old, new = both[0], RENAMED_KEYS[both[0]]
        raise ValueError(f"{where or 'the settings'}: both {old!r} and its new name {new!r} are given; keep {new!r}")
    out = {}
    for key, value in values.items():
        new_key = RENAMED_KEYS.get(key, key)
        new_value = RENAMED_VALUES.get((new_key, value), value) if isinstance(value, str) else value
        if where and (new_key, new_value) != (key, value):
            old, new = (f"{key}: {value}", f"{new_key}: {new_value}") if new_value != value else (key, new_key)
            warnings.warn(f"{where}: '{old}' is now '{new}'; the old name still works for now", FutureWarning, 3)
        out[new_key] = new_value
    return out


def saved_settings(values: dict) -> dict:
    """The settings a run recorded (its config.yaml, metrics.json's train_config) as today's: renamed settings under
    their new names, and those it could not record yet (UNRECORDED) at the value it ran with."""
    return {**UNRECORDED, **renamed(values)}
