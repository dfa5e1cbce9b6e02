"""The training recipe's arithmetic that needs no TensorFlow: restart cycles, patience start.

``nn/schedules.py`` builds the Keras callbacks from these; ``automl validate`` and the fold fit
read :func:`patience_start_epoch` from here, so the command that trains nothing says what early
stopping will do without importing Keras.
"""

from __future__ import annotations

from typing import Any

# cosine_restarts: cycles of length P, 2P, 4P fill the epochs after warm-up.
RESTART_CYCLES = 3
RESTART_T_MUL = 2.0


def patience_start_epoch(params: dict[str, Any], epochs: int) -> int:
    """The first epoch (from 0) whose lack of improvement counts towards early stopping.

    Under a decaying schedule the best epoch is near the end and the high-rate phase is noisy, so
    a flat stretch there is not a plateau: ``cosine`` counts from the middle of its decay (the
    rate has fallen to about half its peak), ``cosine_restarts`` from the middle of its last
    cycle; every schedule skips its warm-up epochs.
    """
    warmup = min(int(params.get("warmup_epochs", 0)), max(epochs - 1, 0))
    decay = epochs - warmup
    name = params.get("schedule", "constant")
    if name == "cosine":
        return warmup + decay // 2
    if name == "cosine_restarts":
        cycles = sum(RESTART_T_MUL**i for i in range(RESTART_CYCLES))
        last = RESTART_T_MUL ** (RESTART_CYCLES - 1)
        return warmup + int(decay * (cycles - last / 2) / cycles)
    return warmup
