"""Whether this machine has an NVIDIA GPU driver, without importing torch (first answers such as
``lipstudy validate`` ask before deciding whether torch must be asked at all)."""

from __future__ import annotations

import glob
import os

__all__ = ["nvidia_driver_present"]


def nvidia_driver_present() -> bool:
    """Whether the NVIDIA kernel driver is loaded on this machine (its /proc or /dev files)."""
    return (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")
            or bool(glob.glob("/dev/nvidia[0-9]*")))
