"""Band-limited resampling of audio by a rational factor: a polyphase, Kaiser-windowed sinc filter.

``y[k] = Σ_n x[n] · h(k·M − n·L)`` for the rate ratio ``L/M`` (reduced), with ``h`` the ideal
low-pass ``2·fc·L·sinc(2·fc·t)`` (``fc = 0.95 · 0.5 / max(L, M)`` cycles per sample of the
``L``-times upsampled signal: 95 % of the lower Nyquist frequency) under a Kaiser window
(β = 8.6) of 32 zero crossings on each side. The filter is centred, so output sample ``k``
is the signal at time ``k / rate_out`` exactly (no delay); the first and last few
milliseconds see zeros beyond the clip's ends. Only the filter taps an output needs are
computed (a table per phase when the ratio is small), a block of outputs at a time: memory
stays bounded whatever the two rates. Measured on sines: within 1e-3 of the analytic
signal up to 87.5 % of the lower Nyquist frequency, and a tone at 110 % of it comes
through below 1e-4 of its amplitude (tests/data/test_resample.py).
"""

from __future__ import annotations

import math

import numpy as np

ROLLOFF = 0.95  # pass band: this fraction of the lower Nyquist frequency
ZERO_CROSSINGS = 32  # of the low-pass sinc on each side of the centre
BETA = 8.6  # Kaiser window: about 80 dB of stop-band attenuation
MAX_RATE = 768_000  # Hz; a header stating more is no audio this reads
_BLOCK = 4096  # output samples computed at a time
_TABLE_MAX = 1 << 21  # taps kept as a table of phases up to this many


def ratio(rate_in: int, rate_out: int) -> tuple[int, int]:
    """(L, M): upsample by L, downsample by M."""
    g = math.gcd(rate_in, rate_out)
    return rate_out // g, rate_in // g


def output_length(n: int, rate_in: int, rate_out: int) -> int:
    up, down = ratio(rate_in, rate_out)
    return -(-n * up // down)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """The 1-D signal ``x`` sampled at ``rate_in`` Hz, at ``rate_out`` Hz (float32)."""
    if rate_in == rate_out:
        return np.asarray(x, dtype=np.float32)
    if not (0 < rate_in <= MAX_RATE and 0 < rate_out <= MAX_RATE):
        raise ValueError(f"sample rates must be in 1..{MAX_RATE} Hz")
    up, down = ratio(rate_in, rate_out)
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    fc = ROLLOFF * 0.5 / max(up, down)
    half = math.ceil(ZERO_CROSSINGS / (2.0 * fc))  # half the filter, in upsampled samples
    taps = 2 * half // up + 2  # input samples under the filter for one output
    # Zeros beyond both ends: every output reads `taps` padded samples from `first`.
    pad = taps + 1
    xp = np.concatenate([np.zeros(pad), x, np.zeros(pad)])
    out = np.empty(output_length(x.size, rate_in, rate_out), dtype=np.float32)
    steps = np.arange(taps)
    # The taps depend only on the output's phase on the upsampled grid (k·M mod L): a table of
    # L rows when it is small, else the rows of each block computed as they are needed.
    table = _taps(np.arange(up), up, half, fc, steps) if up * taps <= _TABLE_MAX else None
    for k0 in range(0, out.size, _BLOCK):
        pos = np.arange(k0, min(out.size, k0 + _BLOCK), dtype=np.int64) * down
        phase = pos % up
        first = -((half - pos) // up)  # ceil((pos - half) / up): the first input under the filter
        h = table[phase] if table is not None else _taps(phase, up, half, fc, steps)
        out[k0 : k0 + pos.size] = (h * xp[(first + pad)[:, None] + steps[None, :]]).sum(1)
    return out


def _taps(phase: np.ndarray, up: int, half: int, fc: float, steps: np.ndarray) -> np.ndarray:
    """Filter taps ``h(t)`` for outputs at these phases, one row each, in the order of ``steps``."""
    t0 = phase + ((half - phase) // up) * up  # pos - first·up, for pos = phase (mod up)
    t = (t0[:, None] - steps[None, :] * up).astype(np.float64)
    u = np.clip(t / half, -1.0, 1.0)
    window = np.i0(BETA * np.sqrt(1.0 - u * u)) / float(np.i0(BETA))
    h = 2.0 * fc * up * np.sinc(2.0 * fc * t) * window
    return np.where(np.abs(t) <= half, h, 0.0)
