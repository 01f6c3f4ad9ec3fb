"""Scores derived from ClassStats (and TargetStats): neural collapse, transferability, spectrum.
docs/CONVENTIONS.md lists, per score, the paper's formula, each peer's convention and the
option that reproduces it."""

from .bhattacharyya import class_variances, gbc, pca_basis
from .hscore import h_score, h_score_shrinkage, ledoit_wolf_shrinkage, oas_shrinkage
from .joint import JointStats, LEEPPass
from .evidence import LogMEFit, logme, logme_fit
from .nc import NC2, NCReport, cdnv, nc1, nc1_trace, nc2, nc3, nc_report
from .ncc import NCCStats
from .per_class import PerClass, Uniformity, hyperspherical_uniformity, per_class_report
from .sfda import SFDAFit, SFDAMixPass, SFDAScorePass, sfda_score
from .spectrum import alpha_req, eigenvalues, rankme
from .transfer_scores import FaCe, face, transferability
from .coding_rate import transrate

__all__ = [
    "FaCe", "JointStats", "LEEPPass", "LogMEFit", "NC2", "NCCStats", "NCReport", "PerClass", "SFDAFit",
    "SFDAMixPass", "SFDAScorePass", "Uniformity", "alpha_req", "cdnv", "class_variances", "eigenvalues", "face",
    "gbc", "h_score", "h_score_shrinkage", "hyperspherical_uniformity", "ledoit_wolf_shrinkage", "logme",
    "logme_fit", "nc1", "nc1_trace", "nc2", "nc3", "nc_report", "oas_shrinkage", "pca_basis", "per_class_report",
    "rankme", "sfda_score", "transferability", "transrate",
]
