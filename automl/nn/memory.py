"""Peak memory of a stretch of work (one trial): resident memory and, with a GPU, device memory.

On Linux the process's high-water mark (``VmHWM``) is reset when :class:`PeakMemory` starts,
through ``/proc/self/clear_refs``, so ``peak_rss_mb`` is the peak *during the trial*; elsewhere
it is the process's lifetime peak (``resource.getrusage``) and ``peak_rss_delta_mb`` only counts
growth of that mark. With a GPU, TensorFlow's ``get_memory_info(...)["peak"]`` (reset at the
start) gives ``peak_gpu_memory_mb``.

This module imports no TensorFlow at import time: it reads GPUs only in a process that has
imported TensorFlow already (one that trains), so ``search`` can import it cheaply.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

_MB = 1024 * 1024


@dataclass(frozen=True)
class MemoryPeaks:
    """What :meth:`PeakMemory.read` measured, in MB (rounded to 0.1); None where unknown.

    The field names are the trial user attributes ``search`` stores them under.
    """

    peak_rss_mb: float | None = None
    # Growth of resident memory during the measured stretch (never negative).
    peak_rss_delta_mb: float | None = None
    peak_gpu_memory_mb: float | None = None  # summed over the GPUs TensorFlow sees

    def to_dict(self) -> dict[str, float]:
        """The known peaks only (a machine without a GPU has no GPU key)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


class PeakMemory:
    """Peak memory of one trial; create it when the trial starts, read it when it ends."""

    def __init__(self) -> None:
        self._reset = _reset_peak_rss()
        self._start_rss = _status_mb("VmRSS")
        self._start_peak = _peak_rss_mb()
        self._gpus = _reset_gpu_peaks()

    def read(self) -> MemoryPeaks:
        """The peaks since this object was created (on Linux; see the module docstring)."""
        peak = _peak_rss_mb()
        if peak is None:
            rss, delta = None, None
        else:
            base = self._start_rss if self._reset else self._start_peak
            rss = round(peak, 1)
            delta = round(max(peak - base, 0.0), 1) if base is not None else None
        gpu = _gpu_peak_mb(self._gpus)
        return MemoryPeaks(rss, delta, round(gpu, 1) if gpu is not None else None)

    def user_attrs(self) -> dict[str, float]:
        """``peak_rss_mb``, ``peak_rss_delta_mb`` and, with a GPU, ``peak_gpu_memory_mb``."""
        return self.read().to_dict()


def _reset_peak_rss() -> bool:
    # Linux >= 4.0: writing 5 resets the VmHWM high-water mark of this process.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_mb("VmHWM") is not None


def _status_mb(field: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return None


def _peak_rss_mb() -> float | None:
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / _MB if sys.platform == "darwin" else maxrss / 1024  # bytes vs kB


def _reset_gpu_peaks() -> list[str]:
    if "tensorflow" not in sys.modules:  # only trials (which import TensorFlow) measure GPUs
        return []
    import tensorflow as tf

    names = []
    for index, _ in enumerate(tf.config.list_physical_devices("GPU")):
        try:
            tf.config.experimental.reset_memory_stats(f"GPU:{index}")
            names.append(f"GPU:{index}")
        except (ValueError, RuntimeError):
            pass
    return names


def _gpu_peak_mb(names: list[str]) -> float | None:
    if not names:
        return None
    import tensorflow as tf

    total = 0.0
    for name in names:
        try:
            total += tf.config.experimental.get_memory_info(name)["peak"] / _MB
        except (ValueError, RuntimeError):
            return None
    return total
