"""The vad, egemaps and logmel/mfcc extractors on real encoded videos: espeak-ng speech, silence and a
loud tone in H.264 + AAC mp4s made here, a video without audio, and the shared clips when present."""
import os
import shutil
import subprocess
import sys
import wave

import av
import numpy as np
import pytest
import scipy.fft
import scipy.signal
import torch

from avfusion.extraction.framewise import frame_intervals, interval_mean
from avfusion.sources import media

FPS, SR = 25, 16000
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs away into the forest."
TONE_HZ = 1000.0


def speech(tmp_path, pitch: int = 50) -> np.ndarray:
    """An espeak-ng sentence at 16 kHz (espeak-ng writes 22.05 kHz 16-bit PCM)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng): no real speech to test on")
    path = tmp_path / f"speech_{pitch}.wav"
    subprocess.run(["espeak-ng", "-p", str(pitch), "-w", str(path), SENTENCE], check=True, capture_output=True)
    with wave.open(str(path)) as f:
        pcm = np.frombuffer(f.readframes(f.getnframes()), np.int16) / 32768.0
        rate = f.getframerate()
    return scipy.signal.resample_poly(pcm, SR, rate)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR))


def tone(seconds: float) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(int(seconds * SR)) / SR)


def write_video(path, sound: np.ndarray | None, seconds: float | None = None) -> str:
    """32x32 H.264 at FPS lasting `seconds` (default: the sound's length), with `sound` as 16 kHz AAC."""
    seconds = seconds if seconds is not None else len(sound) / SR
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("aac", rate=SR, layout="mono") if sound is not None else None
        for k in range(int(round(seconds * FPS))):
            img = np.full((32, 32, 3), 4 * k % 256, np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(video.encode())
        if audio is not None:
            samples = np.clip(sound, -1, 1).astype(np.float32)
            for start in range(0, len(samples), 1024):
                frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = SR, start
                out.mux(audio.encode(frame))
            out.mux(audio.encode())
    return str(path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """name -> (path, frame times, {segment: (start s, end s)})."""
    root = tmp_path_factory.mktemp("clips")
    voice, high = speech(root, 30), speech(root, 85)
    parts = [("silence", silence(1.0)), ("speech", voice), ("pause", silence(1.0)), ("tone", tone(1.5))]
    segments, start = {}, 0.0
    for name, sound in parts:
        segments[name] = (start, start + len(sound) / SR)
        start += len(sound) / SR
    made = {"mixed": (np.concatenate([s for _, s in parts]), segments, None),
            "low": (voice, {}, None), "high": (high, {}, None), "quiet": (0.1 * voice, {}, None),
            "mute": (None, {}, 2.0), "short": (voice[:SR], {}, 2.0)}
    out = {}
    for name, (sound, segs, seconds) in made.items():
        path = write_video(root / f"{name}.mp4", sound, seconds)
        out[name] = (path, media.frame_times(path), segs)
    return out


def inside(times, segment, margin=0.2):
    """Frames well inside a segment (the extractors' context blurs its edges)."""
    return (times > segment[0] + margin) & (times < segment[1] - margin)


@pytest.fixture(scope="module")
def vad():
    from avfusion.extractors.vad import VoiceActivity
    return VoiceActivity()


@pytest.fixture(scope="module")
def egemaps():
    from avfusion.extractors.egemaps import EGeMAPS
    return EGeMAPS()


# --- mapping descriptor steps onto frame intervals ---------------------------------------------

def test_frame_intervals_tile_the_video_and_centre_on_frames():
    times = np.array([0.0, 0.04, 0.08, 0.14])             # the last frame comes late (variable rate)
    lo, hi = frame_intervals(times)
    np.testing.assert_allclose(lo, [-0.02, 0.02, 0.06, 0.11])
    np.testing.assert_allclose(hi, [0.02, 0.06, 0.11, 0.17])
    one_lo, one_hi = frame_intervals(np.array([0.5]))
    assert one_lo[0] == one_hi[0] == 0.5


def test_interval_mean_weights_steps_by_overlap():
    values = np.array([[1.0], [3.0], [7.0]])              # steps [0, 1), [1, 2), [2, 3) seconds
    lo, hi = np.array([0.5, 0.0, 2.5, -5.0, 1.5, 2.9]), np.array([1.5, 3.0, 4.0, -4.0, 1.5, 2.9])
    out = interval_mean(values, 0.0, 1.0, lo, hi)[:, 0]
    # [0.5, 1.5): half of 1 and half of 3; [2.5, 4): only the covered half second counts;
    # before the steps: 0; points take their step's value
    np.testing.assert_allclose(out, [2.0, 11 / 3, 7.0, 0.0, 3.0, 7.0])
    assert interval_mean(np.zeros((0, 2)), 0.0, 1.0, lo, hi).shape == (6, 2)


# --- vad --------------------------------------------------------------------------------------

def test_vad_finds_speech_not_silence_nor_tone(clips, vad):
    path, times, seg = clips["mixed"]
    rows = vad.frames(path, times)
    assert rows.features.shape == (len(times), 1) and rows.features.dtype == np.float32
    assert rows.names == ["speech"] and rows.valid.all()
    speech = rows.features[:, 0]
    assert (speech[inside(times, seg["speech"])] > 0.5).mean() > 0.7
    assert speech[inside(times, seg["silence"])].max() < 0.05
    assert speech[inside(times, seg["pause"])].max() < 0.1
    assert speech[inside(times, seg["tone"])].mean() < 0.1     # loud, but not a voice
    assert rows.provenance["silero_vad"] and rows.provenance["sample_rate"] == SR


def test_vad_same_result_on_one_or_two_threads(clips, vad):
    samples, _ = media.read_audio(clips["short"][0], SR)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = vad.chunk_probabilities(samples)
        torch.set_num_threads(2)
        two = vad.chunk_probabilities(samples)
    finally:
        torch.set_num_threads(threads)
    assert len(one) == int(np.ceil(len(samples) / 512))
    np.testing.assert_array_equal(one, two)
    assert torch.get_num_threads() == threads                 # the extractor leaves the setting alone


@pytest.mark.parametrize("make", ["vad", "egemaps", "logmel"])
def test_frames_without_audio_are_zero_and_invalid(clips, make, request):
    from avfusion.extraction.melspectrum import LogMel
    extractor = LogMel() if make == "logmel" else request.getfixturevalue(make)
    path, times, _ = clips["mute"]
    rows = extractor.frames(path, times)
    assert len(times) == 50 and not rows.valid.any() and not rows.features.any()
    path, times, _ = clips["short"]                           # 1 s of sound in a 2 s video
    rows = extractor.frames(path, times)
    assert rows.features.shape == (len(times), len(rows.names))
    assert rows.valid[times < 0.9].all() and not rows.valid[times > 1.1].any()
    assert not rows.features[~rows.valid].any() and rows.features[rows.valid].any()


def test_vad_on_shared_clips(shared_media, vad):
    """The shared mouth clip is a person speaking; the street clip is crowd noise."""
    fraction = {}
    for name in ("mouth_crop_96px_16khz.mp4", "street_crowd_1080p25.mp4"):
        path = os.path.join(shared_media, name)
        times = media.frame_times(path)
        rows = vad.frames(path, times)
        fraction[name] = float((rows.features[rows.valid, 0] > 0.5).mean())
    assert fraction["mouth_crop_96px_16khz.mp4"] > 0.5
    assert fraction["street_crowd_1080p25.mp4"] < 0.2


# --- egemaps ----------------------------------------------------------------------------------

PITCH, LOUDNESS = "F0semitoneFrom27.5Hz_sma3nz", "Loudness_sma3"


def test_egemaps_columns_are_opensmiles_descriptors(clips, egemaps):
    path, times, seg = clips["mixed"]
    rows = egemaps.frames(path, times)
    assert rows.features.shape == (len(times), 25) and len(rows.names) == 25
    assert {PITCH, LOUDNESS, "jitterLocal_sma3nz", "F1frequency_sma3nz", "alphaRatio_sma3"} <= set(rows.names)
    col = {name: rows.features[:, i] for i, name in enumerate(rows.names)}
    voiced = col[PITCH] > 0
    assert voiced[inside(times, seg["speech"])].mean() > 0.5
    assert not voiced[inside(times, seg["silence"])].any()
    # voiced-only descriptors never mix in openSMILE's unvoiced placeholder (-201)
    assert col["F1amplitudeLogRelF0_sma3nz"].min() > -201
    assert np.all(col["F1frequency_sma3nz"][voiced] > 0)
    assert col[LOUDNESS][inside(times, seg["tone"])].mean() > col[LOUDNESS][inside(times, seg["silence"])].mean() + 1


def test_egemaps_pitch_follows_the_voice_and_loudness_the_level(clips, egemaps):
    def mean_of(name, clip):
        path, times, _ = clips[clip]
        rows = egemaps.frames(path, times)
        pitch = rows.features[:, rows.names.index(PITCH)]
        if name == PITCH:
            return pitch[pitch > 0].mean()
        return rows.features[:, rows.names.index(name)].mean()
    assert mean_of(PITCH, "high") > mean_of(PITCH, "low") + 3      # semitones: espeak -p 85 vs -p 30
    assert mean_of(LOUDNESS, "low") > 3 * mean_of(LOUDNESS, "quiet")   # the same speech at 1/10 amplitude


def test_egemaps_without_opensmile_says_how_to_install(monkeypatch):
    from avfusion.errors import UserError
    from avfusion.extractors import egemaps
    monkeypatch.setitem(sys.modules, "opensmile", None)       # makes `import opensmile` fail
    with pytest.raises(UserError, match=r"pip install -e '\.\[opensmile\]'"):
        egemaps.EGeMAPS()


# --- logmel / mfcc ----------------------------------------------------------------------------

def reference_log_mel(samples: np.ndarray) -> np.ndarray:
    """numpy/scipy log-mel, written out loop by loop: 25 ms periodic Hann windows every 10 ms, 512-point
    power spectrum, 64 HTK-mel triangles from 0 to 8 kHz, log(energy + 1e-6)."""
    window = scipy.signal.get_window("hann", 400)
    freqs = np.fft.rfftfreq(512, 1 / SR)
    mel = lambda hz: 2595 * np.log10(1 + hz / 700)           # noqa: E731
    edges = [700 * (10 ** (m / 2595) - 1) for m in np.linspace(0, mel(SR / 2), 66)]
    bank = np.zeros((257, 64))
    for band in range(64):
        left, centre, right = edges[band:band + 3]
        for b, f in enumerate(freqs):
            if left < f <= centre:
                bank[b, band] = (f - left) / (centre - left)
            elif centre < f < right:
                bank[b, band] = (right - f) / (right - centre)
    rows = []
    for start in range(0, len(samples) - 400 + 1, 160):
        power = np.abs(np.fft.rfft(samples[start:start + 400] * window, 512)) ** 2
        rows.append(np.log(power @ bank + 1e-6))
    return np.array(rows)


def test_logmel_and_mfcc_match_a_numpy_reference(clips):
    from avfusion.extraction.melspectrum import LogMel
    path, times, _ = clips["mixed"]
    samples, start = media.read_audio(path, SR)
    logmel, mfcc = LogMel(), LogMel(mfcc=True)
    reference = reference_log_mel(samples.astype(np.float64))
    np.testing.assert_allclose(logmel.log_mel(samples), reference, rtol=1e-5, atol=1e-5)
    # per frame: each 10 ms row (centred at 12.5 ms + k 10 ms) weighted by its overlap with the frame
    centres = start + (200 + 160 * np.arange(len(reference))) / SR
    expected = np.zeros((len(times), 64))
    for i, (lo, hi) in enumerate(zip(*frame_intervals(times))):
        overlap = np.clip(np.minimum(hi, centres + 0.005) - np.maximum(lo, centres - 0.005), 0, None)
        expected[i] = overlap @ reference / overlap.sum()
    rows = logmel.frames(path, times)
    assert rows.names[0] == "mel_00" and rows.names[-1] == "mel_63" and rows.valid.all()
    np.testing.assert_allclose(rows.features, expected, rtol=1e-5, atol=1e-5)
    cepstra = mfcc.frames(path, times)
    assert cepstra.names == [f"mfcc_{i:02d}" for i in range(20)]
    np.testing.assert_allclose(cepstra.features, scipy.fft.dct(expected, norm="ortho")[:, :20], rtol=1e-5, atol=1e-5)


def test_logmel_rows_line_up_with_frames(clips):
    """The tone's band lights up at the frame where the tone starts, not a frame early or late."""
    from avfusion.extraction.melspectrum import LogMel, hz_to_mel
    path, times, seg = clips["mixed"]
    rows = LogMel().frames(path, times)
    band = int(round(hz_to_mel(TONE_HZ) / hz_to_mel(SR / 2) * 65)) - 1
    energy = rows.features[:, band]
    loud = energy > (energy[inside(times, seg["pause"])].mean() + energy[inside(times, seg["tone"])].mean()) / 2
    onset = times[np.argmax(loud & (times > seg["pause"][0]))]
    assert abs(onset - seg["tone"][0]) <= 1 / FPS


def test_mfcc_deltas_are_librosas_regression_on_the_10ms_rows(clips):
    """13 MFCCs, deltas, delta-deltas of the 10 ms rows (librosa.feature.delta, width 5, edges repeated:
    HTK's formula; delta-deltas as deltas of the deltas), then the overlap-weighted mean per frame."""
    import librosa

    from avfusion.extractors.mfcc import CepstraWithDeltas
    path, times, _ = clips["mixed"]
    samples, start = media.read_audio(path, SR)
    cepstra = scipy.fft.dct(reference_log_mel(samples.astype(np.float64)), norm="ortho")[:, :13]
    first = librosa.feature.delta(cepstra, width=5, order=1, axis=0, mode="nearest")
    second = librosa.feature.delta(first, width=5, order=1, axis=0, mode="nearest")
    steps = np.concatenate([cepstra, first, second], axis=1)
    centres = start + (200 + 160 * np.arange(len(steps))) / SR
    expected = np.zeros((len(times), 39))
    for i, (lo, hi) in enumerate(zip(*frame_intervals(times))):
        overlap = np.clip(np.minimum(hi, centres + 0.005) - np.maximum(lo, centres - 0.005), 0, None)
        expected[i] = overlap @ steps / overlap.sum()
    rows = CepstraWithDeltas().frames(path, times)
    assert rows.names[:2] == ["mfcc_00", "mfcc_01"] and rows.names[13] == "d_mfcc_00" and rows.names[-1] == "dd_mfcc_12"
    np.testing.assert_allclose(rows.features, expected, rtol=1e-4, atol=1e-4)


def test_egemaps_functionals_are_opensmiles_on_the_window_around_each_frame(clips):
    import opensmile

    from avfusion.extractors.egemaps import Functionals
    path, times, _ = clips["short"]                           # 1 s of sound in a 2 s video
    rows = Functionals(window=0.5).frames(path, times)
    assert rows.features.shape == (len(times), 88) and "F0semitoneFrom27.5Hz_sma3nz_amean" in rows.names
    assert rows.valid[times < 0.9].all() and not rows.valid[times > 1.1].any() and not rows.features[~rows.valid].any()
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    samples, start = media.read_audio(path, SR)
    for i in (0, 12, int(np.flatnonzero(rows.valid)[-1])):
        lo = max(0, round((times[i] - start - 0.25) * SR))
        hi = min(len(samples), round((times[i] - start + 0.25) * SR))
        expected = smile.process_signal(samples[lo:hi], SR)
        assert list(expected.columns) == rows.names
        np.testing.assert_allclose(rows.features[i], expected.to_numpy()[0], rtol=1e-5, atol=1e-4)
    tiny = Functionals(window=0.02).frames(path, times)          # too short for openSMILE: NaN there
    assert not tiny.valid.any() and not tiny.features.any()
