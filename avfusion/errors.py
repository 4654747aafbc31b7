"""The user's mistakes: bad params, media, annotations, data layout, weights or checkpoints.

Library code raises a `UserError` subclass whose message names the file or key and what to do, in one
line. Only entry points (`stages/*.py`, `avfusion predict`) turn it into that line on stderr and exit
code 1. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Something the user can fix; the message is one line naming the file or the key."""


class ParamsError(UserError):
    """A params.yaml value of the wrong type, out of range or not allowed (avfusion.params)."""


class DatasetError(UserError):
    """A data root, dataset layout, manifest or feature store that is missing or cannot be used."""


class MediaError(UserError):
    """A video that cannot be used; the message names the file and the problem."""


class AnnotationError(UserError):
    """A label file or video id that cannot be used; the message names the file and the line."""


class WeightsError(UserError):
    """Backbone weights that cannot be fetched, copied or loaded."""


class CheckpointError(UserError):
    """A trained model that is missing or must not be used: not a plain state_dict (e.g. a pickle
    carrying code), or trained on other features."""


class PredictError(UserError):
    """A model, weights or output path that `avfusion predict` cannot use."""


class DeviceError(UserError):
    """A device that was asked for but is not there (e.g. `cuda` without a GPU)."""


def run_entry_point(stage: str, main: Callable[[], object]) -> None:
    """Run a stage's `main`; a UserError ends the process with `<stage>: <message>` and exit code 1."""
    try:
        main()
    except UserError as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
