"""Hands memory the process no longer uses back to the system, so an idle network stays small.

Start-up allocates and frees a lot (catalogs parsed, migrations checked, the key slot
opened), and glibc's malloc keeps freed memory in its heap rather than returning it. A bot
that then sits idle for days holds it for nothing, and a host with twenty networks holds it
twenty times. `malloc_trim(0)` after start, and again every TRIM_EVERY seconds (after a
broadcast's burst, for instance), gave back about 5 MB per idle process (bench/networks.py).
Only with glibc; elsewhere this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_EVERY = 600.0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS)
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release() -> bool:
    """Collect garbage, then return free heap pages to the system. True if trimmed."""
    gc.collect()
    if _TRIM is None:
        return False
    return bool(_TRIM(0))


async def keep_released() -> None:
    """A loop for the supervisor: release now and then."""
    while True:
        release()
        await asyncio.sleep(TRIM_EVERY)
