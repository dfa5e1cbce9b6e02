"""The parts of ``python -m benchmarks.model_quality``, one job each (numpy only at import).

- ``data``: the fixed grouped hold-out and tuning pools of chula_rbc12, as automl reads them;
- ``stats``: metrics from confusion counts, the field-group bootstrap and the decision rule;
- ``arms``: the four arms' child processes (tune to a wall-clock deadline, then score);
- ``ablation``: one factor at a time around the floor, trained on the whole pool;
- ``report``: tables, decisions and the time-to-quality picture.

The design, the rule and the commands are in ``benchmarks/model_quality.py``'s docstring.
"""
