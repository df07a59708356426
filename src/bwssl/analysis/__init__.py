"""Depth-resolved analyses of block outputs: similarity, retrieval, probes, occlusion.

The four headline metrics are re-exported here; each accepts numpy arrays or
torch tensors:

- :func:`linear_cka` (X, Y): linear CKA of two representations of the same examples.
- :func:`retrieval_map` (embeddings, labels): cosine-retrieval mAP, sklearn tie semantics.
- :func:`cps` (tokens): cosine patch similarity of a clip's tokens.
- :func:`occdrop` (acc_full, acc_occluded): relative accuracy drop under occlusion.

The whole suite on trained runs is :func:`analyze` (runs, out, :class:`AnalysisOptions`),
what ``bwssl analyze`` calls (the command then draws the figures). The rest lives in the
submodules: ``similarity`` (also ``rbf_cka``), ``retrieval``, ``probes`` (linear and
cross-validated probes, CPU sklearn or GPU torch), ``occlusion`` (pixel-space occluders, fixed or per clip),
``results`` (the tidy results table and its aggregation), ``collapse`` (the
spread of features across clips); the suite itself is ``suite``
(orchestration and per-run result cache), ``options``, ``sources`` (run and Hugging Face
folders), ``context`` (the per-run context) and the metric families ``clip_metrics``,
``local_losses``, ``gratings`` and ``run_setup`` (the facts the numbers stand on).
"""

from bwssl.analysis.occlusion import occdrop
from bwssl.analysis.options import AnalysisOptions
from bwssl.analysis.retrieval import retrieval_map
from bwssl.analysis.similarity import cps, linear_cka
from bwssl.analysis.suite import analyze

__all__ = ["AnalysisOptions", "analyze", "cps", "linear_cka", "occdrop", "retrieval_map"]
