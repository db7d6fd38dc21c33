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
    """Delay of `ref` inside `deg`, in samples. Negative when the recording starts
    inside the reference (a receiver that shortened the silence before the speech)."""
    if len(deg) < len(ref) // 2:
        raise SystemExit(json.dumps({"error": "recording much shorter than the reference"}))
    corr = correlate(deg, ref, mode="full", method="fft")
    return int(np.argmax(corr)) - (len(ref) - 1)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    ref, deg = load(sys.argv[1]), load(sys.argv[2])
    lag = align(ref, deg)
    if lag < 0:
        deg = np.concatenate([np.zeros(-lag), deg])
    deg = deg[max(lag, 0):max(lag, 0) + len(ref)]
    if len(deg) < len(ref):
        deg = np.concatenate([deg, np.zeros(len(ref) - len(deg))])
    score = pesq(RATE, ref.astype(np.float32), deg.astype(np.float32), "wb")
    print(json.dumps({"mos_lqo": round(float(score), 3), "delay_ms": round(lag * 1000 / RATE, 1)}))


if __name__ == "__main__":
    main()
