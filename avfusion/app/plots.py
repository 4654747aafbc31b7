"""The `avfusion predict --plot` figures: predicted valence and arousal over a video's time, with the
stretches lacking a face or a voice shaded."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")   # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np

from avfusion.learning.plots import save


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def plot_prediction(time: np.ndarray, pred: np.ndarray, face: np.ndarray, audio: np.ndarray,
                    png: str, title: str) -> None:
    """`avfusion predict --plot`: the predicted curves, with the stretches lacking a face or a voice
    shaded (there the model leans on the other modality)."""
    fig, ax = plt.subplots(figsize=(11, 3.6))
    _prediction_panel(ax, time, pred, face, audio, "no face")
    ax.set(xlabel="time (s)", title=title)
    save(fig, png)


def plot_people(time: np.ndarray, people: list[dict], audio: np.ndarray, png: str, title: str) -> None:
    """`avfusion predict --people all --plot`: one panel per person (`people` in the order given: longest
    on screen first), their curves where they are on screen, the rest shaded."""
    fig, axes = plt.subplots(max(1, len(people)), 1, figsize=(11, 0.6 + 2.2 * max(1, len(people))),
                             sharex=True, squeeze=False)
    for ax, person in zip(axes[:, 0], people):
        on_screen = person["face"]
        pred = np.where(on_screen[:, None], person["pred"], np.nan)
        _prediction_panel(ax, time, pred, on_screen, audio, "not on screen")
        ax.set_title(f"person {person['person']} ({on_screen.sum()} frames on screen)", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title)
    save(fig, png)


def _prediction_panel(ax, time, pred, face, audio, no_face: str) -> None:
    step = float(np.median(np.diff(time))) if len(time) > 1 else 0.04
    for present, colour, label in ((face, "tab:blue", no_face), (audio, "tab:green", "no audio")):
        missing = ~np.asarray(present, bool)
        for k, (first, last) in enumerate(_runs(missing)):   # one span per run: single frames show too
            ax.axvspan(time[first] - step / 2, time[last] + step / 2, alpha=0.15, color=colour, lw=0,
                       label=f"{label} ({missing.mean():.0%} of frames)" if k == 0 else None)
    ax.plot(time, pred[:, 0], color="tab:red", lw=1.4, label="valence")
    ax.plot(time, pred[:, 1], color="tab:purple", lw=1.4, label="arousal")
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.set(xlim=(time[0], time[-1] + step), ylim=(-1.05, 1.05))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
