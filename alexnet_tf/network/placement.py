"""Which device each of the two towers runs on: one GPU per tower when there are two, otherwise no placement."""

from __future__ import annotations

import tensorflow as tf

TowerDevices = tuple[str, str]


def tower_devices(device_type: str = "GPU") -> TowerDevices | None:
    """Return `("/GPU:0", "/GPU:1")` when the host has two or more devices of `device_type`, else None.

    None means "let TensorFlow place everything", which is what a single GPU or a CPU host wants: pinning both
    towers to one device only adds copies.
    """
    devices = tf.config.list_logical_devices(device_type)
    if len(devices) < 2:
        return None
    return (devices[0].name, devices[1].name)


def validate(devices: TowerDevices | list[str] | None) -> TowerDevices | None:
    """Check a user-given pair of device strings and return it as a tuple (or None)."""
    if devices is None:
        return None
    devices = tuple(devices)
    if len(devices) != 2 or not all(isinstance(d, str) and d for d in devices):
        raise ValueError(f"tower_devices must be two device strings like ('/GPU:0', '/GPU:1'), got {devices!r}")
    for device in devices:
        try:
            tf.DeviceSpec.from_string(device)
        except ValueError as error:
            raise ValueError(f"tower_devices: {device!r} is not a device string ({error})") from None
    return devices
