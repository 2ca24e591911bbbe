"""Readers of other RLM runtimes' trajectory logs, turning them into this project's run records.

Each importer reads one foreign format into :class:`~rlm_kernel.trajectory.Run` records and writes
a trajectory notebook with :mod:`rlm_kernel.notebook`'s builders, so an imported run opens and
reads like one recorded here. ``rlms_log``: the reference runtime's ``RLMLogger`` JSONL.
"""
