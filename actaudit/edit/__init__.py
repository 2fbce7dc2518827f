"""The edit vocabulary every backend, stage and report shares: nothing here imports torch or onnx.

- :mod:`~actaudit.edit.graph`: the small graph IR that pruning and bound propagation read;
- :mod:`~actaudit.edit.cuts`: which units a prune removes, and the weight edits that do it;
- :mod:`~actaudit.edit.slopes`: per-site slope plans and the result of a rewrite surgery;
- :mod:`~actaudit.edit.fold`: the one rule that folds a slope's mean shift into a consumer's bias;
- :mod:`~actaudit.edit.drift`: how far a changed model's outputs moved from the original's;
- :mod:`~actaudit.edit.ranges`: input boxes for proofs and fresh data.

Backends import these downward; the ``rewrite`` and ``prune`` stages orchestrate them.
"""
