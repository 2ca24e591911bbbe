"""Seeded, offline task families of the RLM paper (S-NIAH, OOLONG, OOLONG-Pairs) and the image task
(number cards on PDF pages): generators only.

A layer below everything that uses them: the scripted model reads their query formats to play them
(:mod:`rlm_kernel.scripted.task_policies`), the evaluation harness (:mod:`rlm_kernel.evals`) writes,
runs and scores them, and ``rlm-kernel demo`` asks an S-NIAH question. Nothing here imports the rest
of the package but :mod:`rlm_kernel.media` (the image record, in the same layer).
"""
