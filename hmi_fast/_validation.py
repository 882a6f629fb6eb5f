"""Input validation in one place: one rule, one sentence naming the argument and the fix."""

from __future__ import annotations

import numbers

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value}")
    return value


def check_dtype(dtype, name: str = "dtype") -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name}: not a NumPy dtype: {dtype!r}; use np.float32 or np.float64") from None
    if dt not in SUPPORTED_DTYPES:
        raise TypeError(f"{name}: unsupported dtype {dt}; use np.float32 or np.float64")
    return dt


def check_bool(value, name: str) -> bool:
    """A real bool (``np.bool_`` too); anything else is a TypeError naming the argument."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}: must be True or False, got {value!r}")


def check_finite_float(value, name: str, *, positive: bool = False) -> float:
    """A finite real number (not a bool); ``positive`` also requires > 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: must be a {'positive ' if positive else ''}finite number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name}: must be a {'positive ' if positive else ''}finite number, got {value!r}")
    return value


def check_center(center):
    """``center=``: False (none), True (the exact mean of τ over the rows), or a finite float μ."""
    if isinstance(center, (bool, np.bool_)):
        return bool(center)
    if isinstance(center, numbers.Real):
        return check_finite_float(center, "center")
    raise TypeError(f"center: must be True, False or a finite number, got {center!r}")


def _refuse_container(X, name: str) -> None:
    """Clear errors for inputs NumPy would turn into something wrong or unreadable."""
    if isinstance(X, np.ma.MaskedArray):
        keep = f"{name}[~{name}.mask.any(axis=1)]" if X.ndim == 2 else f"{name}[~{name}.mask]"
        raise TypeError(
            f"{name}: masked arrays are not supported (the mask would be ignored); drop or impute the masked "
            f"entries first, e.g. {name}.filled(value) or {keep}"
        )
    if hasattr(X, "tocsr") and hasattr(X, "nnz"):
        raise TypeError(f"{name}: sparse matrices are not supported; pass a dense array, e.g. {name}.toarray()")


def check_float_array(X, name: str, ndim: int) -> np.ndarray:
    """Return ``X`` as an ndarray of float32/float64 with ``ndim`` dimensions.

    Integer and boolean input is converted once to float64, and non-native
    byte order to native (both documented, both a copy); masked, sparse,
    complex, object and float16 input is rejected with a message that says
    how to convert it.
    """
    _refuse_container(X, name)
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: cannot be read as a numeric array ({exc}); pass a float array") from None
    if X.ndim != ndim:
        what = "a 2-D array of shape (n_samples, n_features)" if ndim == 2 else "a 1-D array of shape (n_samples,)"
        raise ValueError(f"{name}: expected {what}, got an array with {X.ndim} dimension(s) of shape {X.shape}")
    if X.dtype.kind == "f" and X.dtype.itemsize in (4, 8) and not X.dtype.isnative:
        X = X.astype(X.dtype.newbyteorder("="))
    if X.dtype in SUPPORTED_DTYPES:
        return X
    if X.dtype.kind in "iub":
        return X.astype(np.float64)
    if X.dtype == object:
        raise TypeError(
            f"{name}: object array (mixed types or missing values, e.g. a DataFrame with NA); convert it with "
            f"np.asarray({name}, dtype=np.float64) after handling missing values"
        )
    raise TypeError(f"{name}: unsupported dtype {X.dtype}; convert to np.float32 or np.float64")


def check_lengths(n_rows: int, n_labels: int, xname: str = "X") -> None:
    """One label per row, or the error that says how many of each there are."""
    if n_rows != n_labels:
        raise ValueError(f"{xname} and y: lengths differ ({n_rows} rows in {xname}, {n_labels} labels in y)")


def check_block(X, y, width: int, owner: str, xname: str = "X"):
    """A block of rows and its labels: float arrays, ``width`` columns, equal lengths."""
    X = check_float_array(X, xname, 2)
    y = check_float_array(y, "y", 1)
    if X.shape[1] != width:
        raise ValueError(f"{xname}: expected {width} columns ({owner}), got {X.shape[1]}")
    check_lengths(X.shape[0], y.shape[0], xname)
    return X, y


def first_nonfinite_row(X: np.ndarray) -> int:
    """Index of the first row of ``X`` (1-D or 2-D) holding NaN or inf, or -1."""
    bad = ~np.isfinite(X)
    if X.ndim == 2:
        bad = bad.any(axis=1)
    if not bad.any():
        return -1
    return int(np.argmax(bad))


def not_fitted(name: str, methods: str) -> Exception:
    """The error for using an estimator before fitting (scikit-learn's NotFittedError when available)."""
    msg = f"{name}: not fitted yet; call {methods} first"
    try:
        from sklearn.exceptions import NotFittedError

        return NotFittedError(msg)
    except ImportError:  # scikit-learn is optional
        return AttributeError(msg)


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None, *,
              low: str | None = None, high: str | None = None, note: str = "") -> int:
    """An integer (bool refused) within ``[minimum, maximum]``.

    ``low``/``high`` are how the bounds read in the message (e.g. ``"2**63"``),
    ``note`` a reason appended to the rule, e.g. "n: must be an integer >= 1, got 0".
    """
    lo = low if low is not None else str(minimum)
    hi = high if high is not None else str(maximum)
    if minimum is not None and maximum is not None:
        rule = f"an integer between {lo} and {hi}{note}"
    elif minimum is not None:
        rule = f"an integer >= {lo}{note}"
    elif maximum is not None:
        rule = f"an integer <= {hi}{note}"
    else:
        rule = "an integer"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: must be {rule}, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name}: must be {rule}, got {value}")
    return value


def check_number(value, name: str, minimum: float | None = None, strict: bool = False) -> float:
    """A finite real number (bool refused), optionally ``>= minimum`` (``> minimum`` when ``strict``)."""
    rule = "a finite number" + ("" if minimum is None else f" {'>' if strict else '>='} {minimum:g}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: must be {rule}, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or (minimum is not None and (value <= minimum if strict else value < minimum)):
        raise ValueError(f"{name}: must be {rule}, got {value!r}")
    return value


def check_out(out, shape: tuple, dtype, name: str = "out", avoid=()) -> np.ndarray:
    """A preallocated output a kernel may write: checked before anything touches it.

    ``out`` must be a plain ndarray (a subclass such as ``np.memmap`` is fine,
    a masked array is not) of exactly ``shape`` and ``dtype``, C-contiguous,
    writeable, and share no memory with any array of ``avoid``, a sequence of
    ``(array, description)`` pairs.
    """
    if not isinstance(out, np.ndarray) or isinstance(out, np.ma.MaskedArray):
        raise TypeError(f"{name}: must be a NumPy array (not masked), got {type(out).__name__}")
    dtype = np.dtype(dtype)
    if out.dtype != dtype:
        raise TypeError(f"{name}: has dtype {out.dtype}; pass a {dtype.name} array")
    if out.shape != tuple(shape):
        raise ValueError(f"{name}: has shape {out.shape}; pass an array of shape {tuple(shape)}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name}: is not C-contiguous; pass np.empty({tuple(shape)}) or a slice of rows of one")
    if not out.flags.writeable:
        raise ValueError(f"{name}: is read-only; pass a writeable array")
    for other, what in avoid:
        if other is not None and np.may_share_memory(out, other):
            raise ValueError(f"{name}: shares memory with {what}; pass a separate array")
    return out


def check_dense(X, name: str, ndim: int) -> np.ndarray:
    """User data as a dense float32/float64 array with ``ndim`` dimensions, in scikit-learn's wording.

    Sparse matrices and masked arrays are refused (TypeError: say what to pass
    instead); complex data is refused (ValueError "Complex data not supported");
    object arrays of numbers are converted to float64; a 1-D ``X`` or a 2-D
    ``y`` gets the reshape hint. Values are not checked here (see
    :func:`check_finite`).
    """
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{name}: sparse input is not supported; pass a dense array, e.g. {name}.toarray()")
    _refuse_container(X, name)
    if X is None:
        raise TypeError(f"{name}: expected an array, got None")
    X = np.asarray(X)
    if np.iscomplexobj(X):
        raise ValueError(f"{name}: Complex data not supported; pass real float32 or float64 values")
    if X.dtype == object:
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: an object array that is not numeric ({exc}); "
                            "convert it to np.float32 or np.float64") from None
    if X.ndim != ndim:
        if ndim == 2:
            raise ValueError(f"{name}: expected a 2-D array of shape (n_samples, n_features), got shape {X.shape}. "
                             f"Reshape your data with {name}.reshape(-1, 1) for a single feature or "
                             f"{name}.reshape(1, -1) for a single sample")
        raise ValueError(f"{name}: expected a 1-D array of shape (n_samples,), got shape {X.shape}")
    return check_float_array(X, name, ndim)


def check_finite(X, name: str, row0: int = 0, fix: str = "remove or impute them") -> None:
    """Raise naming the first row (counted from ``row0``) of ``X`` that holds NaN or inf."""
    if X.size and not np.isfinite(X).all():  # whole-array test first: the common, clean case allocates once
        row = first_nonfinite_row(X)
        what = "entry" if X.ndim == 1 else "row"
        raise ValueError(f"{name}: {what} {row0 + row} contains NaN or inf; {fix}")


def check_estimator_Xy(X, y, owner: str, min_samples: int = 1):
    """``(X, y)`` for an estimator's ``fit``: dense float arrays (:func:`check_dense`), y of shape (n,) or
    (n, 1), one label per row, at least ``min_samples`` rows and one feature."""
    if y is None:
        raise ValueError(f"y: {owner} requires y to be passed, but the target y is None")
    X = check_dense(X, "X", 2)
    if not isinstance(y, np.ma.MaskedArray) and not (hasattr(y, "tocsr") and hasattr(y, "nnz")):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
    y = check_dense(y, "y", 1)
    check_lengths(X.shape[0], y.shape[0])
    if X.shape[0] < min_samples:
        raise ValueError(f"X: {X.shape[0]} sample(s) (shape={X.shape}) while a minimum of {min_samples} is required.")
    if X.shape[1] == 0:
        raise ValueError(f"X: 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    return X, y
