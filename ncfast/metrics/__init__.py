"""Scores derived from ClassStats: neural collapse, transferability, spectrum."""

from .joint import JointStats, LEEPPass
from .nc import NC2, NCReport, cdnv, nc1, nc1_trace, nc2, nc3, nc_report
from .ncc import NCCStats
from .spectrum import alpha_req, eigenvalues, rankme
from .transfer_scores import FaCe, face, gbc, h_score, h_score_shrinkage, logme, oas_shrinkage, pca_basis, transferability

__all__ = [
    "FaCe", "JointStats", "LEEPPass", "NC2", "NCCStats", "NCReport", "alpha_req", "cdnv", "eigenvalues",
    "face", "gbc", "h_score", "h_score_shrinkage", "logme", "nc1", "nc1_trace", "nc2", "nc3", "nc_report",
    "oas_shrinkage", "pca_basis", "rankme", "transferability",
]
