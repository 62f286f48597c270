"""The course's convolution math as small pure functions: numpy in, float64 numpy out.

Two operations share one indexing scheme. With the input zero-padded to ``x_pad``:

* cross-correlation, what a CNN layer computes (``torch.nn.functional.conv1d``/``conv2d``)::

      y[i] = sum_k x_pad[i*S + k*D] * h[k]

* convolution, the course's ``x ⋆ h`` (``numpy.convolve`` in full mode), is the same sum
  with the kernel reversed, ``h[n_h - 1 - k]``; with full padding it is
  ``(x ⋆ h)[n] = sum_k x[k] h[n - k]``.

Each output sample reads ``D*(n_h - 1) + 1`` consecutive padded input samples, so there are
``floor((n_x + P_start + P_end - D*(n_h - 1) - 1) / S) + 1`` outputs (``output_size``).

Padding is an int (both ends), a ``(start, end)`` pair for uneven padding, or a name:
``"valid"`` (none), ``"full"`` (every placement that overlaps the input) or ``"same"``
(stride 1 only; output length = input length, torch's rule for correlation and numpy's
``mode="same"`` for convolution when the kernel is even: the odd zero goes to the end of
the input for correlation and to the start for convolution).
"""

from fractions import Fraction
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]
Padding: TypeAlias = int | tuple[int, int] | Literal["valid", "same", "full"]
# Per axis: one Padding for both axes, or (height, width) with a Padding each.
Padding2d: TypeAlias = Padding | tuple[Padding, Padding]
IntPair: TypeAlias = int | tuple[int, int]

_PADDING_FORMS = "an int >= 0, a (start, end) pair of ints >= 0, 'valid', 'same' or 'full'"


def output_size(
    n_x: int, n_h: int, *, padding: Padding = 0, stride: int = 1, dilation: int = 1
) -> int:
    """Number of outputs of a 1-D correlation or convolution of n_x inputs with n_h taps.

    ``floor((n_x + P_start + P_end - D*(n_h - 1) - 1) / S) + 1``; the course's examples,
    a 3-tap moving average over 9 samples:

    >>> output_size(9, 3, padding=2), output_size(9, 3), output_size(9, 3, padding=1, stride=2)
    (11, 7, 5)
    >>> output_size(28, 5, padding=(1, 2), stride=2, dilation=2)
    12
    >>> output_size(2, 5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: no output: the kernel spans 5 samples (n_h=5, dilation=1) but the padded ...
    """
    start, end = _resolve_padding(padding, n_h, stride=stride, dilation=dilation)
    span = dilation * (n_h - 1) + 1  # padded input samples one output reads
    n_y = (n_x + start + end - span) // stride + 1  # // floors, also below zero
    if n_y < 1:
        raise ValueError(
            f"no output: the kernel spans {span} samples (n_h={n_h}, dilation={dilation}) "
            f"but the padded input has {n_x + start + end} (n_x={n_x}, padding=({start}, {end}))"
        )
    return n_y


def conv1d(
    x: npt.ArrayLike,
    h: npt.ArrayLike,
    *,
    padding: Padding = "full",
    stride: int = 1,
    dilation: int = 1,
    flip: bool = True,
) -> FloatArray:
    """1-D convolution (flip=True, the course's x ⋆ h) or cross-correlation (flip=False).

    The defaults give the course's full convolution, equal to ``numpy.convolve(x, h)``.
    The dice example: X in {1, 2, 3} with probabilities 1/4, 1/2, 1/4 plus a fair die
    Y in {1..6}; the pmf of Z = X + Y on {2..9} is the convolution of the two pmfs:

    >>> p_z = conv1d([1/4, 1/2, 1/4], [1/6] * 6)
    >>> format_fractions(p_z)
    '1/24 1/8 1/6 1/6 1/6 1/6 1/8 1/24'
    >>> format_fractions(p_z[[2 - 2, 4 - 2, 9 - 2]])  # P(Z=2), P(Z=4), P(Z=9)
    '1/24 1/6 1/24'
    >>> [round(float(p), 4) for p in p_z[[0, 2, 7]]]
    [0.0417, 0.1667, 0.0417]

    The moving average of the course (a symmetric kernel: flipping changes nothing):

    >>> x, avg = [1, 2, 3, 1, 2, 3, 1, 2, 3], [1/3, 1/3, 1/3]
    >>> format_fractions(conv1d(x, avg, padding=2))
    '1/3 1 2 2 2 2 2 2 2 5/3 1'
    >>> format_fractions(conv1d(x, avg, padding=0))
    '2 2 2 2 2 2 2'
    >>> format_fractions(conv1d(x, avg, padding=1, stride=2))
    '1 2 2 2 5/3'

    Flipping matters for an asymmetric kernel, a difference filter:

    >>> conv1d([1, 4, 9, 16], [1, -1], padding="valid")
    array([3., 5., 7.])
    >>> conv1d([1, 4, 9, 16], [1, -1], padding="valid", flip=False)
    array([-3., -5., -7.])
    """
    x, h = _as_array(x, ndim=1, name="x"), _as_array(h, ndim=1, name="h")
    pads = _resolve_padding(padding, h.size, stride=stride, dilation=dilation, flip=flip)
    taps = h[::-1] if flip else h  # convolution = correlation with the kernel reversed
    windows = _windows(x.size, h.size, padding=pads, stride=stride, dilation=dilation)
    return np.pad(x, pads)[windows] @ taps  # (n_y, n_h) @ (n_h,) -> (n_y,)


def correlate1d(
    x: npt.ArrayLike,
    h: npt.ArrayLike,
    *,
    padding: Padding = 0,
    stride: int = 1,
    dilation: int = 1,
) -> FloatArray:
    """Cross-correlation, the neural-network "convolution": ``torch.nn.functional.conv1d``.

    Same as ``conv1d(..., flip=False)`` but with torch's default, no padding.

    >>> correlate1d([1, 2, 3, 4, 5], [1, 0, -1], padding=(0, 1), stride=2)
    array([-2., -2.])
    """
    return conv1d(x, h, padding=padding, stride=stride, dilation=dilation, flip=False)


def toeplitz(x: npt.ArrayLike, n_y: int) -> FloatArray:
    """The (n_x + n_y - 1) × n_y Toeplitz matrix T(x) with ``T(x) @ y == conv1d(x, y)``.

    Column j is x shifted down by j, so ``T[i, j] = x[i - j]`` (zero outside x). Since
    convolution commutes, ``toeplitz(y, len(x)) @ x`` gives the same result. Polynomial
    multiplication is convolution of coefficient lists, (1 + 2t)(3 + t + t²):

    >>> T = toeplitz([1, 2], 3)
    >>> print(T)
    [[1. 0. 0.]
     [2. 1. 0.]
     [0. 2. 1.]
     [0. 0. 2.]]
    >>> T @ [3, 1, 1]  # 3 + 7t + 3t² + 2t³
    array([3., 7., 3., 2.])
    >>> toeplitz([3, 1, 1], 2) @ [1, 2]
    array([3., 7., 3., 2.])
    """
    x = _as_array(x, ndim=1, name="x")
    _check_positive(n_y=n_y)
    lag = np.arange(x.size + n_y - 1)[:, None] - np.arange(n_y)[None, :]  # (n_x+n_y-1, n_y)
    inside = (lag >= 0) & (lag < x.size)
    return np.where(inside, x[np.clip(lag, 0, x.size - 1)], 0.0)


def correlate2d(
    image: npt.ArrayLike,
    kernel: npt.ArrayLike,
    *,
    padding: Padding2d = 0,
    stride: IntPair = 1,
    dilation: IntPair = 1,
) -> FloatArray:
    """Single-channel 2-D cross-correlation: H×W image, kh×kw kernel -> H'×W'.

    ``padding``, ``stride`` and ``dilation`` are one value for both axes or a
    (height, width) pair; each axis's padding may itself be a (start, end) pair.

    >>> image = np.arange(9).reshape(3, 3)  # [[0 1 2] [3 4 5] [6 7 8]]
    >>> correlate2d(image, np.ones((2, 2)))
    array([[ 8., 12.],
           [20., 24.]])
    >>> correlate2d(image, np.ones((2, 2)), padding=((1, 0), 0), stride=(2, 1))
    array([[ 1.,  3.],
           [20., 24.]])
    """
    image = _as_array(image, ndim=2, name="image")
    kernel = _as_array(kernel, ndim=2, name="kernel")
    y = correlate_volume(
        image[None], kernel[None, None], padding=padding, stride=stride, dilation=dilation
    )
    return y[0]


def correlate_volume(
    volume: npt.ArrayLike,
    kernels: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    *,
    padding: Padding2d = 0,
    stride: IntPair = 1,
    dilation: IntPair = 1,
) -> FloatArray:
    """A conv layer on one volume: C×H×W input, F×C×kh×kw kernels (+ F biases) -> F×H'×W'.

    Equal to ``torch.nn.functional.conv2d`` on a batch of one (cross-correlation). Each
    output map sums the correlations of its C kernel slices with the C input channels:

    >>> volume = np.ones((3, 4, 4))  # C=3 channels of 4×4
    >>> y = correlate_volume(volume, np.ones((2, 3, 3, 3)), bias=[0, 1], padding=1)
    >>> y.shape  # F=2 maps, same size thanks to padding 1
    (2, 4, 4)
    >>> y[:, 1, 1], y[:, 0, 0]  # 3*3*3 ones inside; 3*2*2 at a corner
    (array([27., 28.]), array([12., 13.]))
    """
    x = _as_array(volume, ndim=3, name="volume")  # (C, H, W)
    w = _as_array(kernels, ndim=4, name="kernels")  # (F, C, kh, kw)
    if w.shape[1] != x.shape[0]:
        raise ValueError(
            f"kernels have {w.shape[1]} channels (shape {w.shape}) "
            f"but the volume has {x.shape[0]} (shape {x.shape})"
        )
    rows, cols, pads = _windows2d(x.shape[1:], w.shape[2:], padding, stride, dilation)
    x_pad = np.pad(x, ((0, 0), *pads))
    patches = x_pad[:, rows[:, None, :, None], cols[None, :, None, :]]  # (C, H', W', kh, kw)
    y = np.einsum("cijkl,fckl->fij", patches, w)  # (F, H', W')
    if bias is not None:
        y = y + _as_array(bias, ndim=1, name="bias", size=w.shape[0])[:, None, None]
    return y


def format_fractions(values: npt.ArrayLike, *, max_denominator: int = 1000) -> str:
    """Floats as the nearest small fractions, space-separated: exact-looking course output.

    >>> format_fractions([1/3, 2.0000000000000004, 5/3])
    '1/3 2 5/3'
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    return " ".join(str(Fraction(v).limit_denominator(max_denominator)) for v in flat)


def _windows(
    n_x: int, n_h: int, *, padding: tuple[int, int], stride: int, dilation: int
) -> npt.NDArray[np.intp]:
    """Indices into the padded input: row i holds the n_h samples output i reads."""
    n_y = output_size(n_x, n_h, padding=padding, stride=stride, dilation=dilation)
    return np.arange(n_y)[:, None] * stride + np.arange(n_h)[None, :] * dilation  # (n_y, n_h)


def _windows2d(
    size: tuple[int, ...],
    kernel: tuple[int, ...],
    padding: Padding2d,
    stride: IntPair,
    dilation: IntPair,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], list[tuple[int, int]]]:
    """Row windows (H', kh), column windows (W', kw) and the (start, end) pads per axis."""
    axes = zip(
        size, kernel, _per_axis(padding), _per_axis(stride), _per_axis(dilation), strict=True
    )
    windows, pads = [], []
    for n_x, n_h, pad, s, d in axes:
        pair = _resolve_padding(pad, n_h, stride=s, dilation=d)
        windows.append(_windows(n_x, n_h, padding=pair, stride=s, dilation=d))
        pads.append(pair)
    return windows[0], windows[1], pads


def _per_axis(value: object) -> tuple[object, object]:
    """(height, width) from one value for both axes or a pair; (start, end) pads stay whole."""
    if isinstance(value, tuple) and len(value) == 2:
        return value
    return value, value


def _resolve_padding(
    padding: Padding, n_h: int, *, stride: int, dilation: int, flip: bool = False
) -> tuple[int, int]:
    """(start, end) zero counts from any accepted form of padding; checks all arguments."""
    _check_positive(n_h=n_h, stride=stride, dilation=dilation)
    reach = dilation * (n_h - 1)  # samples a kernel spans beyond its first
    if padding == "valid":
        return 0, 0
    if padding == "full":
        return reach, reach
    if padding == "same":
        if stride != 1:
            raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
        small = reach // 2
        return (reach - small, small) if flip else (small, reach - small)
    pair = (padding, padding) if _is_int(padding) else padding
    if not (isinstance(pair, tuple) and len(pair) == 2 and all(_is_pad(p) for p in pair)):
        raise ValueError(f"padding must be {_PADDING_FORMS}; got {padding!r}")
    return int(pair[0]), int(pair[1])


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _is_pad(value: object) -> bool:
    return _is_int(value) and value >= 0


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _as_array(
    values: npt.ArrayLike, *, ndim: int, name: str, size: int | None = None
) -> FloatArray:
    """float64 array with the expected number of axes, none empty (and length, if given)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim or 0 in array.shape or size not in (None, array.shape[0]):
        wanted = f"length {size}" if size is not None else f"{ndim} non-empty axes"
        raise ValueError(f"{name} must have {wanted}, got shape {array.shape}")
    return array
