"""numpy, when it is installed (the ``numpy`` extra): arrays as NPY bytes for uploads, and as JSON in bodies.

numpy is imported only here, and only when an array is actually met, so the client works without it.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def npy_bytes(array: ArrayLike) -> bytes:
    """``array`` as an NPY file (``np.save``, never pickled): 1-D or 2-D, float64 or float32 as the service takes.

    Other numeric dtypes are sent as float64; NaN marks a missing coordinate.
    """
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - the extra's message
        raise ImportError("uploading an array needs numpy: pip install 'em-client[numpy]'") from None
    values = np.asarray(array)
    if values.dtype not in (np.float64, np.float32):
        values = values.astype(np.float64)
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return buffer.getvalue()


def json_default(value: Any) -> Any:
    """``json.dumps``'s fallback: numpy arrays as (nested) lists with NaN as null, numpy scalars as numbers."""
    tolist = getattr(value, "tolist", None)
    if tolist is None:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    plain = tolist()
    return _nan_to_none(plain) if isinstance(plain, list) else plain


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
