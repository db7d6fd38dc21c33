#!/usr/bin/env python3
"""Score a degraded recording against its reference with PESQ (ITU-T P.862.2
wide-band), printing one JSON object.

Both files are mixed to mono and resampled to 16 kHz. The recording is
aligned to the reference first (cross-correlation of the envelopes finds the
end-to-end delay, which includes call setup and the jitter buffer), then cut
to the reference's length; PESQ then handles the remaining small, varying
delays itself.

usage: pesq_score.py REFERENCE.wav DEGRADED.wav
"""
import json
import sys

import numpy as np
from pesq import pesq
from scipy.io import wavfile
from scipy.signal import correlate, resample_poly

RATE = 16000


def load(path):
    rate, x = wavfile.read(path)
    x = x.astype(np.float64)
    if x.ndim > 1:
        x = x.mean(axis=1)
    g = np.gcd(int(rate), RATE)
    return resample_poly(x, RATE // g, int(rate) // g)


def align(ref, deg):
    """Delay of `ref` inside `deg`, in samples (>= 0)."""
    if len(deg) < len(ref) // 2:
        raise SystemExit(json.dumps({"error": "recording much shorter than the reference"}))
    corr = correlate(deg, ref, mode="full", method="fft")
    lag = int(np.argmax(corr)) - (len(ref) - 1)
    return max(lag, 0)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    ref, deg = load(sys.argv[1]), load(sys.argv[2])
    lag = align(ref, deg)
    deg = deg[lag:lag + len(ref)]
    if len(deg) < len(ref):
        deg = np.concatenate([deg, np.zeros(len(ref) - len(deg))])
    score = pesq(RATE, ref.astype(np.float32), deg.astype(np.float32), "wb")
    print(json.dumps({"mos_lqo": round(float(score), 3), "delay_ms": round(lag * 1000 / RATE, 1)}))


if __name__ == "__main__":
    main()
