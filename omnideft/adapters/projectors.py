"""DEFT projectors: P (out x r) -> (Q_P, right) with P_proj = Q_P right^T; the injection uses Q_P.

All are computed in fp32 (rank-r work: O(out r^2)) and are differentiable, so P always receives a gradient.
Formulas (docs/adapters.md has the table):

  relu   Q_P = P,           right = relu(P)                     P relu(P)^T           (PEFT, authors' default)
  qr     Q_P = right = Q    (P = Q T, reduced QR)               Q Q^T                  (PEFT; orthogonal)
  ppt    Q_P = right = P                                        P P^T                  (authors' SDXL code)
  relu2  Q_P = right = relu(P)                                  relu(P) relu(P)^T
  svd    Q_P = right = U    (P = U S V^T, thin SVD)             U U^T                  (orthogonal, via SVD)
  tsvd   Q_P = U, right = U diag(S)                             U S U^T = (P P^T)^1/2  (Table 4; not idempotent)
  lrmf   Q_P = P, right = P (P^T P)^-1                          P (P^T P)^-1 P^T       (least-squares factor W ~ P C)
  nmf    Q_P = N, right = N (N^T N)^-1, N = relu(P)             projector onto a non-negative basis
  eigen  Q_P = right = V    (P^T P = E L E^T, V = P E L^-1/2)   V V^T                  (orthogonal, via eigh)
"""

from __future__ import annotations

import torch

from omnideft.adapters.spec import PROJECTORS  # the names (an option's allowed values); their math is here

_RIDGE = 1e-6  # keeps the r x r Gram solves finite when columns collapse (nmf with dead relu columns)


ELEMENTWISE = ("relu", "ppt", "relu2")  # no arithmetic: exact in any dtype


def project(P: torch.Tensor, projector: str, keep_dtype: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q_P, right) (out x r): fp32, or P's own dtype for the elementwise projectors when `keep_dtype` (exact, and
    no fp32 copy of P to keep for backward)."""
    if not (keep_dtype and projector in ELEMENTWISE):
        P = P.to(torch.float32)
    if projector == "relu":
        return P, torch.relu(P)
    if projector == "qr":
        Q = torch.linalg.qr(P).Q
        return Q, Q
    if projector == "ppt":
        return P, P
    if projector == "relu2":
        N = torch.relu(P)
        return N, N
    if projector in ("svd", "tsvd"):
        U, S, _ = torch.linalg.svd(P, full_matrices=False)
        return (U, U) if projector == "svd" else (U, U * S)
    if projector == "lrmf":
        return P, _right_inverse(P)
    if projector == "nmf":
        N = torch.relu(P)
        return N, _right_inverse(N)
    if projector == "eigen":
        evals, evecs = torch.linalg.eigh(P.T @ P)
        V = P @ (evecs * evals.clamp_min(_RIDGE).rsqrt())
        return V, V
    raise ValueError(f"unknown DEFT projector {projector!r}; known: {PROJECTORS}")


def _right_inverse(B: torch.Tensor) -> torch.Tensor:
    """B (B^T B)^-1, so that B right^T is the orthogonal projector onto span(B)."""
    gram = B.T @ B
    gram = gram + _RIDGE * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(gram.shape[0], device=B.device)
    return torch.linalg.solve(gram, B.T).T
