"""The `avfusion` command: `predict` (valence and arousal of a video), `features` (its per-frame features),
`compare` (two experiments' test CCC, paired bootstrap), `results` (docs/results.md from the experiments) and
`pull` (`dvc pull` that names the files a remote lacks)."""
from __future__ import annotations

import argparse
import os
import sys

from avfusion import paths
from avfusion.errors import PredictError, UserError
from avfusion.sources.media import probe

DESCRIPTION = "Audio-visual valence/arousal prediction with models trained by the avfusion pipeline."


def _predict(args: argparse.Namespace) -> None:
    # Fail on a bad video or output path at once, before torch, the models and the extraction load.
    probe(args.video)
    _check_out(args.out, args.plot, args.video_out)
    # Imported only now: torch and the extractors take seconds to load.
    from avfusion.app.plots import plot_people, plot_prediction
    from avfusion.app.predict import Predictor, overlay_people, write_atomically, write_csv, write_people_csv

    predictor = Predictor(args.model or paths.models_dir(), args.weights, args.device)
    if predictor.warning:
        print(f"avfusion {args.command}: warning: {predictor.warning}", file=sys.stderr)
    title = os.path.basename(args.video)
    if args.people == "all":
        result = predictor.predict_people(args.video, args.smooth_valence, args.smooth_arousal)
        write_atomically(args.out, lambda tmp: write_people_csv(tmp, result))
        if args.plot:
            write_atomically(args.plot, lambda tmp: plot_people(result["time"], result["people"], result["audio"],
                                                                tmp, title))
        summary = f"{len(result['people'])} people"
    else:
        result = predictor.predict(args.video, args.smooth_valence, args.smooth_arousal)
        write_atomically(args.out, lambda tmp: write_csv(tmp, result))
        if args.plot:
            write_atomically(args.plot, lambda tmp: plot_prediction(
                result["time"], result["pred"], result["face"], result["audio"], tmp, title))
        summary = f"face in {result['face'].mean():.0%}"
    if args.video_out:
        from avfusion.app.overlay import write_overlay
        write_overlay(args.video, args.video_out, overlay_people(result))
    print(f"{args.out}: {len(result['time'])} frames ({summary}, audio in {result['audio'].mean():.0%})",
          file=sys.stderr)


def _check_out(*paths: str | None) -> None:
    for out in filter(None, paths):
        directory = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(directory):
            raise PredictError(f"{out}: its directory does not exist")
        if not os.access(directory, os.W_OK):
            raise PredictError(f"{out}: its directory is not writable")


def _features(args: argparse.Namespace) -> None:
    probe(args.video)                 # a bad video or output fails at once, before torch loads
    _check_out(args.out)
    from avfusion.app.export import ExportError, available, extract_all, write_table
    from avfusion.app.predict import write_atomically
    from avfusion.extraction.registry import get

    weights = args.weights or os.path.join(paths.root(), "data", "weights")
    names = args.extractors.split(",") if args.extractors else available(weights, args.params)
    for name in names:
        get(name)                     # an unknown name: one line listing the known ones
    if not names:
        raise ExportError(f"no extractor can run: no weights in {weights} (pass --weights DIR or --extractors)")
    header, table = extract_all(args.video, names, weights, args.device, args.params)
    write_atomically(args.out, lambda tmp: write_table(tmp, header, table))
    print(f"{args.out}: {len(table)} frames, {len(header) - 2} columns ({', '.join(names)})", file=sys.stderr)


def _compare(args: argparse.Namespace) -> None:
    from avfusion.app.compare import compare, report
    result = compare(args.a, args.b, args.resamples, args.seed)
    print(report(args.a, args.b, result, args.resamples, args.seed))


def _results(args: argparse.Namespace) -> None:
    from avfusion.app.results import write_results
    out = args.out or os.path.join(paths.root(), "docs", "results.md")
    missing = write_results(out=out)
    incomplete = [f"{title} ({n} rows)" for title, n in missing.items() if n]
    print(f"{out}: written" + (f"; not run yet: {', '.join(incomplete)}" if incomplete else ""), file=sys.stderr)


def _pull(args: argparse.Namespace) -> None:
    from avfusion.app.remote import pull
    print(pull(args.remote))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="avfusion", description=DESCRIPTION)
    commands = top.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "predict", help="per-frame valence and arousal of a video",
        description="Write one CSV row per decoded frame: frame (0-based), time (s), valence, arousal "
                    "(in [-1, 1]), face and audio (1 when that modality was present at the frame).")
    p.add_argument("video", help="any container FFmpeg reads, with or without audio or a face")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--model",
                   help="a trained fold (models/fold-0) or a models/ directory, whose folds are merged and "
                        "seeds (seed-<s>/) averaged (default: the project's models/)")
    p.add_argument("--weights", help="directory with each extractor's weights in <name>/ "
                                     "(default: the model's project's data/weights)")
    p.add_argument("--plot", help="also draw the curves into this PNG (with --people all: one panel per person)")
    p.add_argument("--people", choices=("one", "all"), default="one",
                   help="one: the main face (default); all: every tracked face, one CSV row per frame per "
                        "person: frame,time,person,valence,arousal,face,audio,x,y,w,h (box in pixels)")
    p.add_argument("--video-out", metavar="FILE.mp4",
                   help="also write the video with each face's box, id and valence/arousal gauges, and its audio")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    p.add_argument("--smooth-valence", type=int, default=0, metavar="FRAMES", help="moving average (0 = off)")
    p.add_argument("--smooth-arousal", type=int, default=0, metavar="FRAMES", help="moving average (0 = off)")
    p.set_defaults(run=_predict)

    f = commands.add_parser(
        "features", help="per-frame features of a video, every extractor in one CSV",
        description="Write one CSV row per decoded frame: frame (0-based), time (s), then per extractor "
                    "<name>.valid (1 when the extractor saw its modality at the frame) and its columns "
                    "<name>.<feature> (named features, or numbered embeddings: facenet.000 ...). "
                    "The extractors use the params.yaml sections of the project.")
    f.add_argument("video", help="any container FFmpeg reads")
    f.add_argument("--out", required=True, help="CSV file to write")
    f.add_argument("--extractors", help="comma-separated names, e.g. vad,mfcc (default: all that can run here: "
                                        "their weights in --weights, openSMILE installed for egemaps)")
    f.add_argument("--weights", help="directory with each extractor's weights in <name>/ "
                                     "(default: the project's data/weights)")
    f.add_argument("--params", help="the extractors' params (default: the project's params.yaml)")
    f.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    f.set_defaults(run=_features)

    c = commands.add_parser(
        "compare", help="test CCC of two experiments, with a paired bootstrap interval of the difference",
        description="A and B: experiment names (dvc exp show), commits or branches, evaluated on the same test "
                    "videos. Prints per dimension CCC(A) - CCC(B) and its 95%% interval over resampled videos.")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    c.add_argument("--seed", type=int, default=0, help="resampling seed (default: %(default)s)")
    c.set_defaults(run=_compare)

    r = commands.add_parser("results", help="write docs/results.md from the experiments (benchmarks/run_results.py)")
    r.add_argument("--out", help="markdown file to write (default: the project's docs/results.md)")
    r.set_defaults(run=_results)

    u = commands.add_parser(
        "pull", help="dvc pull, naming in one line the files the DVC remote did not give",
        description="Run `dvc pull` in the current project. When the remote lacks objects, DVC checks out "
                    "nothing and names their hashes; this names the files instead, in one line, exit code 1.")
    u.add_argument("-r", "--remote", help="the DVC remote (default: the project's default remote)")
    u.set_defaults(run=_pull)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except UserError as exc:   # the user's to fix: one line naming the file, no traceback
        print(f"avfusion {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
