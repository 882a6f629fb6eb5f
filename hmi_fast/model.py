"""The hierarchical multi-index model (docs/model.md) and its streaming sampler.

``y = Σ_k a_k g_k(<w_k, x>) + √Δ ξ`` with ``x ~ N(0, I_d)`` (or ``N(0, Σ)``:
``rho=`` for AR(1), ``covariance=`` for any SPD matrix), ``a_k ∝ k^-γ``
normalised so that ``Σ a_k² = 1`` (package convention), and orthonormal
directions ``w_k`` (rows of ``W``).

Row ``i`` of the data (its covariates and its label noise) is a function of
``(seed, i)`` only, so a stream gives the same rows whatever block size,
block order or thread count reads it, and ``n`` may exceed memory.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from . import _config
import scipy.linalg as sla
from numba import prange
from scipy.linalg import lapack

from ._config import jit
from ._random import ROW_LIMIT, SEED_LIMIT, fill_normals, stream_key
from ._validation import check_dtype, check_float_array, check_int, check_number, check_out, check_positive_int
from .links import Link, combine, resolve_links

DIRECTIONS = ("orthogonal", "gaussian")


def coefficients(m_star: int, gamma: float) -> np.ndarray:
    """``a_k = k^-γ / Z`` with ``Z² = Σ_j j^-2γ`` so that ``Σ a_k² = 1`` (package convention)."""
    k = np.arange(1, m_star + 1, dtype=np.float64)
    a = k ** (-float(gamma))
    return a / np.sqrt(np.sum(a * a))


def _householder_frame(d: int, m: int, seed: int):
    """``(G, R, frame)``: the seeded Gaussian d×m matrix, the R of its QR, and the frame of its Q."""
    rng = np.random.default_rng([seed, 0x57])
    G = rng.standard_normal((d, m))
    qr, tau, _, info = lapack.dgeqrf(G)
    V = np.tril(qr[:, :m], -1)
    V[np.arange(m), np.arange(m)] = 1.0
    S = np.zeros((m, m))
    for j in range(m):  # larft, forward columnwise: S[:j, j] = -tau_j S[:j, :j] V[:, :j]ᵀ v_j
        S[:j, j] = -tau[j] * (S[:j, :j] @ (V[:, :j].T @ V[:, j]))
        S[j, j] = tau[j]
    return G, np.triu(qr[:m, :m]), LatentFrame._from_factors(d, m, seed, np.ascontiguousarray(V), S)


class LatentFrame:
    """The frame of a model's latent rows: ``x = Q g`` with ``Q = I − V S Vᵀ`` orthogonal.

    A model streams latent rows ``g`` (no projection per row); sums built from
    them are second moments of ``g`` and become those of ``x`` by
    ``Q · Qᵀ``. Q depends on ``(d, m_star, seed)`` only, which is the frame's
    :attr:`key` (what accumulator states store). Two frames are equal when
    their keys are.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import HMIModel
    >>> f = HMIModel(d=6, m_star=2, gamma=1.0, seed=3).frame
    >>> f.key
    {'kind': 'latent', 'd': 6, 'm_star': 2, 'seed': 3}
    >>> Q = f.matrix_to_x(np.eye(6))  # Q I Qᵀ = I
    >>> bool(np.allclose(Q, np.eye(6)))
    True
    """

    def __init__(self, d: int, m_star: int, seed: int):
        d = check_positive_int(d, "d")
        m_star = check_positive_int(m_star, "m_star")
        if m_star > d:
            raise ValueError(f"m_star: must be at most d={d}, got {m_star}")
        seed = check_positive_int(seed, "seed", minimum=0)
        other = _householder_frame(d, m_star, seed)[2]
        self.__dict__.update(other.__dict__)

    @classmethod
    def _from_factors(cls, d, m, seed, V, S):
        self = cls.__new__(cls)
        self.d, self.m_star, self.seed = int(d), int(m), int(seed)
        self._V, self._S = V, S
        return self

    @property
    def key(self) -> dict:
        return {"kind": "latent", "d": self.d, "m_star": self.m_star, "seed": self.seed}

    @classmethod
    def from_key(cls, key) -> "LatentFrame":
        """The frame a :attr:`key` describes (checked)."""
        if not isinstance(key, dict) or key.get("kind") != "latent" or set(key) != {"kind", "d", "m_star", "seed"}:
            raise ValueError(f"frame: expected a latent-frame key {{'kind': 'latent', 'd', 'm_star', 'seed'}}, got {key!r}")
        return cls(key["d"], key["m_star"], key["seed"])

    def __eq__(self, other) -> bool:
        return isinstance(other, LatentFrame) and self.key == other.key

    def __hash__(self) -> int:
        return hash((self.d, self.m_star, self.seed))

    def __repr__(self) -> str:
        return f"LatentFrame(d={self.d}, m_star={self.m_star}, seed={self.seed})"

    def columns(self, k: int) -> np.ndarray:
        """The first ``k`` columns of Q (d × k)."""
        V, S = self._V, self._S
        return np.eye(self.d, k) - V @ (S @ V[:k].T)

    def matrix_to_x(self, A: np.ndarray) -> np.ndarray:
        """``Q A Qᵀ`` for a symmetric d×d matrix of latent-frame second moments (symmetric result)."""
        V, S = self._V, self._S
        AV = A @ V
        VtAV = V.T @ AV
        B = AV @ S.T  # A V Sᵀ
        out = A - V @ (S @ AV.T) - B @ V.T + V @ (S @ VtAV @ S.T) @ V.T
        return 0.5 * (out + out.T)

    def vector_to_x(self, v: np.ndarray) -> np.ndarray:
        """``Q v`` for a latent-frame vector (e.g. a sum of rows)."""
        V, S = self._V, self._S
        return v - V @ (S @ (V.T @ v))


class HMIModel:
    """Hierarchical multi-index model with a seeded, streaming sampler.

    Parameters
    ----------
    d : int
        Input dimension.
    m_star : int
        Number of hidden directions, ``1 <= m_star <= d``.
    gamma : float
        Decay exponent of the coefficients, ``a_k ∝ k^-γ``.
    link : str, callable or sequence
        Link function(s) g_k: ``"he2"``, ``"he2_he4"``, ``"abs"``, ``"relu"``,
        a callable, or one per direction.
    noise : float
        Label noise variance Δ ≥ 0.
    seed : int
        Seeds both the directions and the data stream.
    directions : {"orthogonal", "gaussian"}
        ``"orthogonal"``: orthonormal rows (QR of a Gaussian matrix).
        ``"gaussian"``: i.i.d. N(0, 1/d) entries, so ``||w_k|| ≈ 1``.
    rho : float, optional
        AR(1) input covariance ``Σ_ij = ρ^|i−j|``, ``|ρ| < 1`` (``x_1 = u_1``,
        ``x_j = ρ x_{j−1} + √(1−ρ²) u_j``: O(d) per row). ``0`` is the isotropic model.
    covariance : array of shape (d, d), optional
        Any symmetric positive definite input covariance (``x = L u`` with
        ``Σ = L Lᵀ``: O(d²) per row, as much as one rank-1 update of T).

    Attributes
    ----------
    W : ndarray of shape (m_star, d)
    a : ndarray of shape (m_star,)
    links : tuple of Link
    frame : LatentFrame or None
        The frame of the rows :meth:`latent_rows` returns (``x = Q g``);
        ``None`` when they are rows of x (models with a covariance).

    Notes
    -----
    With a covariance Σ the labels still use ``z_k = <w_k, x>``, so ``W``
    spans the index space in x coordinates (what SIR, SAVE and whitened pHd
    estimate), but ``z_k ~ N(0, w_kᵀ Σ w_k)`` and the ``z_k`` are correlated:
    ``a_k`` keeps its meaning as the weight of ``g_k(z_k)`` in the target,
    while ``Σ a_k² = 1`` no longer makes the target's variance 1, and the
    theory of docs/theory.md (which assumes ``x ~ N(0, I)``) does not apply.

    Examples
    --------
    >>> from hmi_fast import HMIModel
    >>> model = HMIModel(d=50, m_star=3, gamma=1.3, seed=1)
    >>> X, y = model.sample(100)
    >>> X.shape, y.shape
    ((100, 50), (100,))
    """

    def __init__(self, d, m_star, gamma, link="he2_he4", noise=0.0, seed=0, directions="orthogonal", rho=None,
                 covariance=None):
        self.d = check_positive_int(d, "d")
        self.m_star = check_positive_int(m_star, "m_star")
        if self.m_star > self.d:
            raise ValueError(f"m_star: must be at most d={self.d}, got {self.m_star}")
        self.gamma = gamma = check_number(gamma, "gamma")
        self.noise = check_number(noise, "noise", minimum=0.0)  # the variance Δ of the label noise
        self.seed = check_int(seed, "seed", 0, SEED_LIMIT - 1, high="2**64 - 1")
        if directions not in DIRECTIONS:
            raise ValueError(f"directions: must be one of {DIRECTIONS}, got {directions!r}")
        self.directions = directions
        self.links: tuple[Link, ...] = resolve_links(link, self.m_star)
        self.link = link
        self.a = coefficients(self.m_star, gamma)
        self.rho, self.covariance, self._chol = _check_covariance(rho, covariance, self.d)
        self.W = self._make_directions()
        self._key = stream_key(self.seed)
        if self.rho is not None or self._chol is not None:
            self.frame = None  # latent_rows returns rows of x

    def _make_directions(self) -> np.ndarray:
        """W from the Householder QR of a seeded Gaussian d×m* matrix G = Q R.

        Q = H_1 ⋯ H_m* = I − V S Vᵀ (compact WY form) is kept in :attr:`frame`:
        the stream draws latent rows g ~ N(0, I) and sets x = Q g, so that
        ``z = W x`` is ``g[:m*]`` for orthonormal W (``Rᵀ g[:m*] / √d`` for
        Gaussian W) with no projection per row, and T of the x-rows is Q T_g Qᵀ.
        """
        G, R, frame = _householder_frame(self.d, self.m_star, self.seed)
        self.frame = frame
        self._V, self._S = frame._V, frame._S
        m = self.m_star
        if self.directions == "gaussian":
            self._Mz = np.ascontiguousarray(R.T / np.sqrt(self.d))  # z = Mz g[:m]
            return np.ascontiguousarray(G.T / np.sqrt(self.d))
        self._Mz = None
        return np.ascontiguousarray(frame.columns(m).T)

    def rotate(self, A: np.ndarray) -> np.ndarray:
        """``Q A Qᵀ`` for a symmetric d×d matrix A of latent-frame second moments (A itself when ``frame`` is None)."""
        return A if self.frame is None else self.frame.matrix_to_x(A)

    def input_covariance(self) -> np.ndarray:
        """The covariance Σ of x (d × d): the identity, ``ρ^|i−j|``, or ``covariance``."""
        if self.rho is not None:
            i = np.arange(self.d)
            return self.rho ** np.abs(i[:, None] - i[None, :]).astype(np.float64)
        if self.covariance is not None:
            return self.covariance.copy()
        return np.eye(self.d)

    def __repr__(self) -> str:
        extra = f", rho={self.rho}" if self.rho is not None else (
            ", covariance=<d×d>" if self.covariance is not None else "")
        return (
            f"HMIModel(d={self.d}, m_star={self.m_star}, gamma={self.gamma}, link={self.link!r}, "
            f"noise={self.noise}, seed={self.seed}, directions={self.directions!r}{extra})"
        )

    # ------------------------------------------------------------------ data
    def target(self, X: np.ndarray) -> np.ndarray:
        """Noise-free target ``f*(x) = Σ_k a_k g_k(<w_k, x>)`` for the rows of ``X``."""
        return combine(self.links, self.a, self.preactivations(X))

    def preactivations(self, X: np.ndarray) -> np.ndarray:
        """``Z = X Wᵀ`` (n × m*), in float64."""
        X = check_float_array(X, "X", 2)
        if X.shape[1] != self.d:
            raise ValueError(f"X: expected shape (n, {self.d}), got {X.shape}")
        W = self.W if X.dtype == np.float64 else self.W.astype(X.dtype)
        return np.asarray(X @ W.T, dtype=np.float64)

    def _check_range(self, start, stop) -> tuple[int, int]:
        start = check_int(start, "start", 0, ROW_LIMIT, high="2**63", note=_ROWS_BELOW)
        stop = check_int(stop, "stop", start, ROW_LIMIT, low=f"start={start}", high="2**63", note=_ROWS_BELOW)
        return start, stop

    def _check_out(self, out, n: int, dtype):
        """``dtype`` resolved against ``out`` (None: out's, or float64), and ``out`` checked."""
        if out is None:
            return check_dtype(np.float64 if dtype is None else dtype, "dtype"), None
        if dtype is None:
            if not isinstance(out, np.ndarray):
                raise TypeError(f"out: must be a NumPy array, got {type(out).__name__}")
            dtype = check_dtype(out.dtype, "out")
        else:
            dtype = check_dtype(dtype, "dtype")
        return dtype, check_out(out, (n, self.d), dtype, "out", [(a, "the model's own arrays") for a in self._own_arrays()])

    def _own_arrays(self):
        """Every array the model holds (an ``out`` must not overlap them)."""
        for holder in (self, getattr(self, "frame", None)):
            for value in getattr(holder, "__dict__", {}).values():
                if isinstance(value, np.ndarray):
                    yield value

    def rows(self, start: int, stop: int, *, dtype=None, out=None):
        """Rows ``start .. stop`` of the data stream, as ``(X, y)``.

        Labels are computed from the float64 covariates before any rounding
        to ``dtype``, with a fixed summation order: every row is the same
        whatever block size or thread count produced it.

        Parameters
        ----------
        start, stop : int
            ``0 <= start <= stop <= 2**63`` (rows are numbered by a 64-bit counter).
        dtype : np.float32 or np.float64, optional
            Of ``X`` and ``y``; default: ``out``'s dtype, or float64.
        out : ndarray, optional
            A C-contiguous, writeable array of shape ``(stop - start, d)`` and
            dtype ``dtype`` that shares no memory with the model; it is filled
            and returned as ``X``. Checked before anything is written.

        Examples
        --------
        >>> from hmi_fast import HMIModel
        >>> model = HMIModel(d=5, m_star=1, gamma=1.0, seed=0)
        >>> X, y = model.rows(10, 13)
        >>> X.shape, bool((X == model.sample(13)[0][10:]).all())
        ((3, 5), True)
        """
        start, stop = self._check_range(start, stop)
        dtype, out = self._check_out(out, stop - start, dtype)
        X = np.empty((stop - start, self.d), dtype=dtype) if out is None else out
        return self._rows(start, X)

    def _rows(self, start: int, X: np.ndarray):
        """Fill ``X`` (checked by the caller) with rows ``start ..``; returns ``(X, y)``."""
        if self.frame is None:  # a model with a covariance: its latent rows are rows of x
            X, y = self._covariance_rows(start, X)
            return X, y.astype(X.dtype, copy=False)
        G, y = self._latent(start, np.empty(X.shape, dtype=np.float64))
        _rotate_rows(G, self._V, self._S, X)
        return X, y.astype(X.dtype, copy=False)

    def latent_rows(self, start: int, stop: int, *, dtype=None, out=None):
        """Latent rows ``g`` (``x = Q g``) of rows ``start .. stop`` and their labels.

        The engine streams these: T of the latent rows is rotated once at the
        end (docs/model.md). Labels are float64, computed from the float64
        draws whatever the rows' dtype. For a model with a covariance
        (``frame`` None) these are rows of x.

        Parameters
        ----------
        start, stop : int
            ``0 <= start <= stop <= 2**63``.
        dtype : np.float32 or np.float64, optional
            Of the rows; default: ``out``'s dtype, or float64.
        out : ndarray, optional
            As for :meth:`rows`: C-contiguous, writeable, shape ``(stop - start, d)``,
            dtype ``dtype``, no memory shared with the model. Filled and returned.

        Examples
        --------
        >>> import numpy as np
        >>> from hmi_fast import HMIModel
        >>> model = HMIModel(d=5, m_star=1, gamma=1.0, seed=0)
        >>> G, y = model.latent_rows(0, 4, out=np.empty((4, 5), dtype=np.float32))
        >>> G.dtype, y.dtype
        (dtype('float32'), dtype('float64'))
        """
        start, stop = self._check_range(start, stop)
        dtype, out = self._check_out(out, stop - start, dtype)
        G = np.empty((stop - start, self.d), dtype=dtype) if out is None else out
        return self._latent(start, G)

    def _latent(self, start: int, G: np.ndarray):
        """Fill ``G`` (checked by the caller) with latent rows ``start ..``; returns ``(G, y)``."""
        if self.frame is None:
            return self._covariance_rows(start, G)
        n = G.shape[0]
        xi = np.empty((n, 1), dtype=np.float64)
        Z = np.empty((n, self.m_star), dtype=np.float64)
        fill_normals(self._key, start, G, xi, head=Z)
        if self._Mz is not None:
            Z = _small_matmul(Z, self._Mz)
        y = combine(self.links, self.a, Z)
        if self.noise > 0:
            y += np.sqrt(self.noise) * xi[:, 0]
        return G, y

    def _covariance_rows(self, start: int, X: np.ndarray):
        """Fill ``X`` with rows of ``x = C u`` (C the AR(1) recursion or the Cholesky factor; u the
        isotropic stream); returns ``(X, y)`` with float64 labels."""
        n = X.shape[0]
        U = np.empty((n, self.d), dtype=np.float64)
        xi = np.empty((n, 1), dtype=np.float64)
        fill_normals(self._key, start, U, xi)
        Z = np.empty((n, self.m_star), dtype=np.float64)
        if self.rho is not None:
            _ar1_rows(U, self.rho, np.sqrt(1.0 - self.rho**2), self.W, X, Z)
        else:
            _cholesky_rows(U, self._chol, self.W, X, Z)
        y = combine(self.links, self.a, Z)
        if self.noise > 0:
            y += np.sqrt(self.noise) * xi[:, 0]
        return X, y

    def sample(self, n: int, dtype=np.float64):
        """The first ``n`` rows of the stream, in memory: ``(X, y)``."""
        n = check_int(n, "n", 1, ROW_LIMIT, high="2**63", note=_ROWS_BELOW)
        return self._rows(0, np.empty((n, self.d), dtype=check_dtype(dtype, "dtype")))

    def stream(self, n: int, block_size: int | None = None, dtype=np.float64, start: int = 0, *,
               reuse_buffer: bool = False) -> Iterator:
        """Yield ``(X_block, y_block)`` covering rows ``start .. start + n``.

        Each block is a new array the caller owns (``list(model.stream(...))``
        and ``np.concatenate`` of the blocks are safe).

        Parameters
        ----------
        n : int
            Rows in all.
        block_size : int, optional
            Rows per block (default: 32 MiB of rows, see ``hmi_fast._config.block_rows``).
        dtype : np.float32 or np.float64
        start : int
            First row (``start + n <= 2**63``).
        reuse_buffer : bool
            ``True``: every ``X_block`` is a view of one buffer, overwritten by
            the next step (no allocation per block). Only for a consumer that
            is done with each block before it asks for the next.

        Examples
        --------
        >>> import numpy as np
        >>> from hmi_fast import HMIModel
        >>> model = HMIModel(d=4, m_star=1, gamma=1.0, seed=0)
        >>> X = np.concatenate([xb for xb, _ in model.stream(10, block_size=3)])
        >>> bool((X == model.sample(10)[0]).all())
        True
        """
        n = check_int(n, "n", 1, ROW_LIMIT, high="2**63", note=_ROWS_BELOW)
        start = check_int(start, "start", 0, ROW_LIMIT - n, high=f"2**63 - n = 2**63 - {n}", note=_ROWS_BELOW)
        dtype = check_dtype(dtype, "dtype")
        if not isinstance(reuse_buffer, (bool, np.bool_)):
            raise TypeError(f"reuse_buffer: must be True or False, got {reuse_buffer!r}")
        bs = _config.block_rows(self.d, dtype, block_size)
        return _ModelStream(self, start, n, bs, dtype, bool(reuse_buffer))


#: how the row bound reads in messages.
_ROWS_BELOW = " (rows are numbered by a 64-bit counter)"


class _ModelStream:
    """Iterator over a model's rows; also tells the engine its length, width and dtype."""

    def __init__(self, model: HMIModel, start: int, n: int, block_size: int, dtype, reuse_buffer: bool = False):
        self.model = model
        self.start = start
        self.n = n
        self.block_size = block_size
        self.dtype = dtype
        self.d = model.d
        self.reuse_buffer = reuse_buffer

    def __len__(self) -> int:
        return -(-self.n // self.block_size)

    def __iter__(self):
        shape = (min(self.block_size, self.n), self.d)
        buf = np.empty(shape, dtype=self.dtype) if self.reuse_buffer else None
        row = self.start
        end = self.start + self.n
        while row < end:
            b = min(self.block_size, end - row)
            X = buf[:b] if buf is not None else np.empty((b, self.d), dtype=self.dtype)
            yield self.model._rows(row, X)
            row += b


@jit(parallel=True)
def _rotate_rows(G, V, S, X):
    """X[i] = Q G[i] with Q = I − V S Vᵀ (fixed summation order per row)."""
    n, d = G.shape
    m = V.shape[1]
    for i in prange(n):
        s = np.zeros(m)
        for j in range(d):
            g = G[i, j]
            for k in range(m):
                s[k] += V[j, k] * g
        u = np.zeros(m)
        for k in range(m):
            acc = 0.0
            for l in range(k, m):
                acc += S[k, l] * s[l]
            u[k] = acc
        for j in range(d):
            acc = G[i, j]
            for k in range(m):
                acc -= V[j, k] * u[k]
            X[i, j] = acc


@jit()
def _small_matmul(Z, M):
    """Z Mᵀ with a fixed summation order (M is m×m)."""
    n, m = Z.shape
    out = np.empty((n, m))
    for i in range(n):
        for k in range(m):
            acc = 0.0
            for l in range(m):
                acc += M[k, l] * Z[i, l]
            out[i, k] = acc
    return out


def _check_covariance(rho, covariance, d):
    """``(rho, covariance, cholesky factor)``; ``rho=0`` is the isotropic model."""
    if rho is not None and covariance is not None:
        raise ValueError("rho, covariance: give one input covariance, not both")
    if rho is not None:
        if isinstance(rho, bool) or not isinstance(rho, (int, float, np.integer, np.floating)):
            raise TypeError(f"rho: must be a number with |rho| < 1, got {rho!r}")
        rho = float(rho)
        if not (np.isfinite(rho) and abs(rho) < 1.0):
            raise ValueError(f"rho: the AR(1) correlation must satisfy |rho| < 1, got {rho}")
        return (None if rho == 0.0 else rho), None, None
    if covariance is None:
        return None, None, None
    C = np.asarray(covariance)
    if C.dtype.kind not in "fiu":
        raise TypeError(f"covariance: unsupported dtype {C.dtype}; pass a real (d, d) matrix")
    C = np.array(C, dtype=np.float64)
    if C.shape != (d, d):
        raise ValueError(f"covariance: expected shape ({d}, {d}), got {C.shape}")
    if not np.isfinite(C).all():
        raise ValueError("covariance: contains NaN or inf")
    if not np.allclose(C, C.T, rtol=1e-10, atol=1e-12 * np.abs(C).max()):
        raise ValueError("covariance: must be symmetric; pass (C + C.T) / 2")
    C = 0.5 * (C + C.T)
    try:
        L = sla.cholesky(C, lower=True)
    except sla.LinAlgError:
        raise ValueError("covariance: must be positive definite (its Cholesky factorisation failed)") from None
    return None, C, np.ascontiguousarray(L)


@jit(parallel=True)
def _ar1_rows(U, rho, s, W, X, Z):
    """X[i] = AR(1) recursion on U[i] (x_0 = u_0, x_j = rho x_{j-1} + s u_j); Z[i] = W X[i], fixed order."""
    n, d = U.shape
    m = W.shape[0]
    for i in prange(n):
        prev = U[i, 0]
        X[i, 0] = prev
        for k in range(m):
            Z[i, k] = W[k, 0] * prev
        for j in range(1, d):
            prev = rho * prev + s * U[i, j]
            X[i, j] = prev
            for k in range(m):
                Z[i, k] += W[k, j] * prev


@jit(parallel=True)
def _cholesky_rows(U, L, W, X, Z):
    """X[i] = L U[i] (L lower triangular), Z[i] = W X[i], fixed summation order (X may be U)."""
    n, d = U.shape
    m = W.shape[0]
    for i in prange(n):
        for k in range(m):
            Z[i, k] = 0.0
        for j in range(d - 1, -1, -1):  # from the last row of L: U[i, :j+1] is still unchanged
            acc = 0.0
            for l in range(j + 1):
                acc += L[j, l] * U[i, l]
            X[i, j] = acc
            for k in range(m):
                Z[i, k] += W[k, j] * acc
