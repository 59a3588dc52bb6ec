"""PCA whitening learned on a collection's descriptors (Jégou & Chum, ECCV 2012).

x -> l2n(P^T (x - mean)), P the top `dim` eigenvectors of the covariance scaled by
eigenvalue ** -power. power 0.5 is full whitening; smaller powers whiten partially, which
is safer when the collection is small next to the descriptor dimension (the covariance of N
descriptors has rank below N, and full whitening then blows up noise directions).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


class WhiteningError(ValueError):
    """Whitening cannot be learned or loaded from what was given."""


@dataclass(frozen=True, slots=True)
class PCAWhitening:
    """A learned whitening: mean (D), projection (D x d), and its content id."""

    mean: F32
    projection: F32
    power: float

    @property
    def input_dim(self) -> int:
        """Dimension of the descriptors it whitens."""
        return int(self.projection.shape[0])

    @property
    def dim(self) -> int:
        """Dimension of the whitened descriptors."""
        return int(self.projection.shape[1])

    @property
    def id(self) -> str:
        """A content id: the same learned matrices, the same id (stored in the model spec)."""
        digest = hashlib.sha256(self.mean.tobytes() + self.projection.tobytes())
        return f"pcaw{self.dim}-{digest.hexdigest()[:16]}"

    def apply(self, x: NDArray[np.floating]) -> F32:
        """N x D descriptors -> N x d whitened, L2-normalised descriptors."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise WhiteningError(
                f"whitening {self.id} expects N x {self.input_dim} descriptors, got {x.shape}"
            )
        out = (x - self.mean) @ self.projection
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.asarray(out / np.maximum(norms, 1e-12), dtype=np.float32)

    def to_bytes(self) -> bytes:
        """The artefact stored in the blob store (npz)."""
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, projection=self.projection, power=np.float32(self.power))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PCAWhitening:
        """Load an artefact written by `to_bytes`."""
        try:
            with np.load(io.BytesIO(data)) as z:
                return cls(np.asarray(z["mean"], dtype=np.float32),
                           np.asarray(z["projection"], dtype=np.float32), float(z["power"]))
        except (OSError, ValueError, KeyError) as exc:
            raise WhiteningError(f"not a whitening artefact: {exc}") from exc


def learn_pca_whitening(
    descriptors: NDArray[np.floating], dim: int = 0, power: float = 0.5, eps: float = 1e-6
) -> PCAWhitening:
    """Learn PCA whitening on N x D descriptors; `dim` 0 keeps min(N - 1, D) components."""
    x = np.asarray(descriptors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise WhiteningError(f"need at least 2 descriptors to learn whitening, got {x.shape}")
    if not np.isfinite(x).all():
        raise WhiteningError("descriptors contain NaN or infinite values")
    n, d = x.shape
    keep = min(n - 1, d) if dim <= 0 else dim
    if keep > min(n - 1, d):
        raise WhiteningError(
            f"cannot keep {keep} dimensions: {n} descriptors of dimension {d} give at most "
            f"{min(n - 1, d)} components (ingest more images or ask for fewer dimensions)"
        )
    mean = x.mean(axis=0)
    cov = np.cov(x - mean, rowvar=False)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1][:keep]
    scale = np.maximum(eigvals[order], eps) ** -power
    projection = eigvecs[:, order] * scale[None, :]
    return PCAWhitening(mean.astype(np.float32), projection.astype(np.float32), float(power))
