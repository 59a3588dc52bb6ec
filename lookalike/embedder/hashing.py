"""Binary hash codes by Iterative Quantization (Gong & Lazebnik, CVPR 2011).

x -> sign((x - mean) P R) packed into B / 8 bytes, P the top-B PCA directions of the
collection and R a B x B rotation learned to make those signs lose as little as possible:
ITQ alternates B = sign(V R) with the orthogonal Procrustes solution of min ||B - V R||.
Codes are compared by Hamming distance, a cheap pre-filter before exact float re-ranking.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lookalike.embedder.errors import EmbedderError

F32 = NDArray[np.float32]
Codes = NDArray[np.uint8]

# 48: the learned latent layer's size in Lin et al. (CVPRW 2015); Milvus binary vectors only
# need a multiple of 8.
HASH_BITS = (48, 64, 128, 256)
FORMAT_VERSION = 1


class HashingError(EmbedderError):
    """A hash that cannot be learned, loaded or applied to what was given."""


@dataclass(frozen=True, slots=True)
class ItqHash:
    """A learned ITQ hash: mean (D), projection (D x B), rotation (B x B), and its content id."""

    mean: F32
    projection: F32
    rotation: F32

    def __post_init__(self) -> None:
        for name in ("mean", "projection", "rotation"):
            if getattr(self, name).dtype != np.float32:
                raise HashingError(f"{name} must be float32, got {getattr(self, name).dtype}")
        if self.projection.ndim != 2 or self.projection.shape[1] not in HASH_BITS:
            raise HashingError(f"projection must be D x B with B in {HASH_BITS}, got {self.projection.shape}")
        d, b = self.projection.shape
        if self.mean.shape != (d,):
            raise HashingError(f"mean must have shape ({d},) to match the projection, got {self.mean.shape}")
        if self.rotation.shape != (b, b):
            raise HashingError(
                f"rotation must be {b} x {b} to match the projection, got {self.rotation.shape}"
            )

    @property
    def bits(self) -> int:
        """Number of bits B of a code."""
        return int(self.projection.shape[1])

    @property
    def input_dim(self) -> int:
        """Dimension D of the descriptors it hashes."""
        return int(self.projection.shape[0])

    @property
    def code_bytes(self) -> int:
        """Bytes per packed code (B / 8)."""
        return self.bits // 8

    @property
    def id(self) -> str:
        """A content id: the same learned matrices, the same id (stored in the model spec)."""
        digest = hashlib.sha256(self.mean.tobytes() + self.projection.tobytes() + self.rotation.tobytes())
        return f"itq{self.bits}-{digest.hexdigest()[:16]}"

    def project(self, x: NDArray[np.floating]) -> F32:
        """N x D descriptors -> N x B rotated PCA coordinates, whose signs are the code."""
        x = self._check(x)
        return np.asarray((x - self.mean) @ self.projection @ self.rotation, dtype=np.float32)

    def encode(self, x: NDArray[np.floating]) -> Codes:
        """N x D descriptors -> N x B/8 packed codes.

        Bit i of a code (numpy's big-endian `packbits` order: byte i // 8, mask 0x80 >> i % 8)
        is 1 where component i of `project(x)` is positive.
        """
        return np.packbits(self.project(x) > 0, axis=1)

    def to_bytes(self) -> bytes:
        """The artefact stored in the blob store (npz, no pickled objects)."""
        buf = io.BytesIO()
        np.savez(
            buf,
            allow_pickle=False,
            format_version=np.int64(FORMAT_VERSION),
            mean=self.mean,
            projection=self.projection,
            rotation=self.rotation,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ItqHash:
        """Load an artefact written by `to_bytes`."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                version = int(z["format_version"])
                if version != FORMAT_VERSION:
                    raise HashingError(
                        f"ITQ artefact has format version {version}, this code reads {FORMAT_VERSION}"
                    )
                return cls(
                    np.asarray(z["mean"], dtype=np.float32),
                    np.asarray(z["projection"], dtype=np.float32),
                    np.asarray(z["rotation"], dtype=np.float32),
                )
        except HashingError as exc:
            raise HashingError(f"not a valid ITQ artefact: {exc}") from exc
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise HashingError(f"not an ITQ artefact: {exc}") from exc

    def _check(self, x: NDArray[np.floating]) -> F32:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise HashingError(f"hash {self.id} expects N x {self.input_dim} descriptors, got {x.shape}")
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).any(axis=1).sum())
            raise HashingError(f"{bad} of {x.shape[0]} descriptors contain NaN or infinite values")
        return x


def learn_itq(x: NDArray[np.floating], bits: int, iterations: int = 50, seed: int = 0) -> ItqHash:
    """Learn a `bits`-bit ITQ hash on N x D descriptors; deterministic for a given seed."""
    if bits not in HASH_BITS:
        raise HashingError(f"bits must be one of {HASH_BITS}, got {bits}")
    if iterations < 0:
        raise HashingError(f"iterations must be >= 0, got {iterations}")
    data = np.asarray(x, dtype=np.float64)
    if data.ndim != 2:
        raise HashingError(f"need N x D descriptors to learn a hash, got shape {data.shape}")
    n, d = data.shape
    if bits > d:
        raise HashingError(f"cannot learn {bits} bits from descriptors of dimension {d} (at most {d})")
    if n < bits:
        raise HashingError(f"need at least {bits} descriptors to learn {bits} bits, got {n}")
    if not np.isfinite(data).all():
        raise HashingError("descriptors contain NaN or infinite values")

    mean = data.mean(axis=0)
    centred = data - mean
    eigvals, eigvecs = np.linalg.eigh(centred.T @ centred / max(n - 1, 1))
    projection = eigvecs[:, np.argsort(eigvals)[::-1][:bits]]
    # Eigenvectors are defined up to sign; fix it so code bits do not flip between LAPACK builds.
    pivots = np.abs(projection).argmax(axis=0)
    projection *= np.sign(projection[pivots, np.arange(bits)])

    v = centred @ projection
    rotation = _random_rotation(bits, seed)
    for _ in range(iterations):
        signs = np.where(v @ rotation >= 0, 1.0, -1.0)
        u, _s, wt = np.linalg.svd(v.T @ signs)
        rotation = u @ wt
    return ItqHash(mean.astype(np.float32), projection.astype(np.float32), rotation.astype(np.float32))


def itq_from_linear(weight: NDArray[np.floating], bias: NDArray[np.floating]) -> ItqHash:
    """The learned hash layer sigmoid(W x + b) > 0.5 (W: B x D, b: B) as an ItqHash artefact.

    sigmoid(z) > 0.5 iff z > 0, and W x + b = W (x - m) with m = -pinv(W) b when W has full row
    rank (W pinv(W) = I), so projection W^T, rotation I and mean m give the same bits; a
    fine-tuned hash layer is then stored, loaded and served exactly like an ITQ hash.
    """
    w = np.asarray(weight, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise HashingError(f"need W (B x D) and b (B,), got {w.shape} and {b.shape}")
    bits, dim = w.shape
    if bits not in HASH_BITS:
        raise HashingError(f"bits must be one of {HASH_BITS}, got {bits}")
    if bits > dim or np.linalg.matrix_rank(w) < bits:
        raise HashingError(
            f"a {bits} x {dim} hash layer needs full row rank to be written as an ItqHash"
        )
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise HashingError("hash layer weights contain NaN or infinite values")
    mean = -np.linalg.pinv(w) @ b
    return ItqHash(mean.astype(np.float32), w.T.astype(np.float32), np.eye(bits, dtype=np.float32))


def hamming_distances(a: Codes, b: Codes) -> NDArray[np.int64]:
    """N x C and M x C packed codes -> N x M Hamming distances (holds N x M x C bytes: small sets)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype != np.uint8 or b.dtype != np.uint8 or a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise HashingError(
            f"need two uint8 code matrices with the same number of bytes, got {a.dtype} {a.shape} "
            f"and {b.dtype} {b.shape}"
        )
    distances: NDArray[np.int64] = np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2, dtype=np.int64)
    return distances


def _random_rotation(size: int, seed: int) -> NDArray[np.float64]:
    """A random orthogonal matrix (QR of a seeded gaussian, signs fixed so it is Haar-distributed)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((size, size)))
    result: NDArray[np.float64] = q * np.sign(np.diag(r))
    return result
