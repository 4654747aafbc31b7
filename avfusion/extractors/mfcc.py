"""`mfcc`: 20 MFCCs per video frame, the orthonormal DCT-II of the log mel row (avfusion/extraction/melspectrum.py)."""
from __future__ import annotations

from avfusion.extraction.base import register
from avfusion.extraction.framewise import FramewiseExtractor
from avfusion.extraction.melspectrum import LogMel


@register
class MfccExtractor(FramewiseExtractor):
    """20 MFCCs (the DCT of the log mel rows), `mfcc.mfcc_00` ..."""
    name, version = "mfcc", "mfcc-torch/1"

    def build(self):
        mfcc = LogMel(mfcc=True)
        return mfcc, mfcc.names
