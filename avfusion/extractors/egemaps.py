"""`egemaps`: openSMILE's eGeMAPSv02 low-level descriptors (pitch, loudness, jitter, shimmer, HNR,
formants, spectral balance, ...) on each video frame, under openSMILE's own descriptor names.

Licence: the `opensmile` package ships the openSMILE binary under audEERING's research licence: free
for research and education, NOT for commercial use. It is an optional extra
(`pip install -e '.[opensmile]'`) and is imported only when this extractor is built.

openSMILE gives one row of 25 descriptors every 10 ms (20-60 ms windows, smoothed over 3 frames:
`_sma3`). A video frame's value is the mean of those rows over the frame's interval, weighted by
overlap (avfusion.framewise): a 25 fps frame holds four of them, so the mean keeps the descriptors'
own time resolution and uses every row once (the default, `egemaps.set: lld`). `egemaps.set:
functionals` gives openSMILE's own 88 eGeMAPSv02 functionals of the `egemaps.window` seconds centred
on each frame instead (the parameter set as its paper defines it; neighbouring frames then share most
of their audio).
Descriptors marked `nz` (F0, jitter, shimmer, HNR, formants) exist only in voiced rows (F0 > 0;
elsewhere openSMILE writes 0, or -201 for the formant amplitudes), so they are averaged over the
voiced rows only, as eGeMAPS' own functionals do, and are 0 in a frame without a voiced row: a pitch
of 0 means "unvoiced", as in openSMILE's output. Audio is read at 16 kHz.
"""
from __future__ import annotations

import warnings
from importlib.metadata import version
from typing import Literal

import numpy as np

from avfusion.errors import UserError
from avfusion.extraction.base import ExtractorParams, register
from avfusion.extraction.framewise import (
    SAMPLE_RATE,
    FrameFeatures,
    FramewiseExtractor,
    frame_audio,
    frame_intervals,
    interval_mean,
)
from avfusion.params import number

HOP = 0.01              # seconds between eGeMAPS LLD rows
VOICING = "F0semitoneFrom27.5Hz_sma3nz"


MISSING = "the egemaps extractor needs openSMILE: pip install -e '.[opensmile]'"


def _smile(level: str = "LowLevelDescriptors"):
    try:
        import opensmile
    except ImportError:
        raise UserError(MISSING) from None
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=getattr(opensmile.FeatureLevel, level))


class EGeMAPS:
    """Built once (starts openSMILE), then `frames(path, times)` per video."""

    def __init__(self):
        self.smile = _smile()
        self.names = list(self.smile.feature_names)
        self.voiced_only = np.array([name.endswith("_sma3nz") for name in self.names])
        self.provenance = {"extractor": "egemaps", "opensmile": version("opensmile"), "feature_set": "eGeMAPSv02",
                           "feature_level": "LowLevelDescriptors", "sample_rate": SAMPLE_RATE, "hop": HOP,
                           "per_frame": "overlap-weighted mean of LLD rows over the frame interval; "
                                        "nz descriptors over voiced rows only"}

    def descriptors(self, samples: np.ndarray) -> tuple[np.ndarray, float]:
        """LLD rows [m, 25] of 16 kHz audio, and the time of row 0's centre from sample 0."""
        lld = self.smile.process_signal(samples, SAMPLE_RATE)
        if list(lld.columns) != self.names:
            raise RuntimeError(f"openSMILE returned columns {list(lld.columns)}, expected {self.names}")
        starts = lld.index.get_level_values("start").total_seconds().to_numpy()
        ends = lld.index.get_level_values("end").total_seconds().to_numpy()
        centre = float(starts[0] + ends[0]) / 2 if len(lld) else 0.0
        return lld.to_numpy(np.float64), centre

    def frames(self, path: str, times: np.ndarray) -> FrameFeatures:
        samples, start, valid = frame_audio(path, times)
        out = np.zeros((len(valid), len(self.names)))
        if valid.any():
            lld, centre = self.descriptors(samples)
            voiced = (lld[:, self.names.index(VOICING)] > 0).astype(np.float64)
            # row k stands for [centre_k - HOP/2, centre_k + HOP/2) on the video clock
            t0, intervals = start + centre - HOP / 2, frame_intervals(times)
            out[:, ~self.voiced_only] = interval_mean(lld[:, ~self.voiced_only], t0, HOP, *intervals)
            voiced_sum = interval_mean(lld[:, self.voiced_only] * voiced[:, None], t0, HOP, *intervals)
            voiced_share = interval_mean(voiced, t0, HOP, *intervals)
            has_voice = voiced_share[:, 0] > 0
            out[np.ix_(has_voice, self.voiced_only)] = voiced_sum[has_voice] / voiced_share[has_voice]
            out[~valid] = 0.0
        return FrameFeatures(out.astype(np.float32), valid, list(self.names), dict(self.provenance))


class Functionals:
    """openSMILE's 88 eGeMAPSv02 functionals of the `window` seconds of audio centred on each frame (cut
    at the audio's ends): openSMILE's own summary, one call per frame. A frame whose window is too short
    for openSMILE (it returns NaN) is not valid."""

    def __init__(self, window: float):
        self.smile, self.window = _smile("Functionals"), window
        self.names = list(self.smile.feature_names)
        self.provenance = {"extractor": "egemaps", "opensmile": version("opensmile"), "feature_set": "eGeMAPSv02",
                           "feature_level": "Functionals", "sample_rate": SAMPLE_RATE, "window": window,
                           "per_frame": "functionals of the window centred on the frame"}

    def frames(self, path: str, times: np.ndarray) -> FrameFeatures:
        samples, start, valid = frame_audio(path, times)
        out = np.zeros((len(valid), len(self.names)))
        half = self.window / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)      # "Segment too short": its NaNs are handled below
            for i in np.flatnonzero(valid):
                lo, hi = (int(np.clip(round((times[i] - start + s) * SAMPLE_RATE), 0, len(samples))) for s in (-half, half))
                out[i] = self.smile.process_signal(samples[lo:hi], SAMPLE_RATE).to_numpy(np.float64)[0]
        # openSMILE gives NaN for a window too short to summarise (~0.1 s): no value at that frame
        too_short = np.isnan(out).any(axis=1)
        out[too_short], valid = 0.0, valid & ~too_short
        return FrameFeatures(out.astype(np.float32), valid, list(self.names), dict(self.provenance))


class Params(ExtractorParams):
    set: Literal["lld", "functionals"] = "lld"     # 25 low-level descriptors averaged per frame | 88 functionals per frame
    window: number(gt=0) = 2                       # functionals: seconds of audio centred on each frame


@register
class EGeMAPSExtractor(FramewiseExtractor):
    """openSMILE eGeMAPSv02 low-level descriptors, 25 columns under openSMILE's names (optional extra);
    `set: functionals`: the 88 functionals over `window` seconds centred on each frame."""
    name, version = "egemaps", "opensmile-egemapsv02-lld/1"
    Params = Params
    output_params = ("set", "window")

    @classmethod
    def available(cls) -> str | None:
        import importlib.util
        return None if importlib.util.find_spec("opensmile") else MISSING

    def build(self):
        smile = Functionals(self.params["window"]) if self.params.get("set") == "functionals" else EGeMAPS()
        return smile, smile.names
