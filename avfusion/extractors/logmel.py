"""`logmel`: 64 log mel band energies per video frame (avfusion/extraction/melspectrum.py)."""
from __future__ import annotations

from avfusion.extraction.base import register
from avfusion.extraction.framewise import FramewiseExtractor
from avfusion.extraction.melspectrum import LogMel


@register
class LogMelExtractor(FramewiseExtractor):
    """64 log mel band energies (torch), `logmel.mel_00` ..."""
    name, version = "logmel", "logmel-torch/1"

    def build(self):
        logmel = LogMel(mfcc=False)
        return logmel, logmel.names
