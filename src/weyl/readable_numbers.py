"""Numbers for people reading a log: ``41.2k``, ``1.23M``, ``3m12s``, ``2h05m``."""

from __future__ import annotations

import math


def format_si(value: float) -> str:
    """``812``, ``41.2k``, ``1.23M``, ``4.50G``: three significant digits with an SI suffix."""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            scaled = value / threshold
            return f"{scaled:.3g}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.3g}"


def format_duration(seconds: float) -> str:
    """``4.2s``, ``45s``, ``3m12s``, ``2h05m``, ``3d04h``: two fields at most."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"
