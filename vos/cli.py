"""The ``vos`` command line: ``vos run``, ``vos batch``, ``vos eval``, ``vos image``, ``vos mask`` and ``vos app``.

Only argparse and the torch-free error and signal modules are imported at start so that ``vos
--help`` is instant; each subcommand's module (:mod:`vos.commands`, and with it torch, av or ray) is
imported when it runs. Errors caused by bad input are
printed as one line ``vos <cmd>: error: <message>`` and exit with code 2; Ctrl-C and SIGTERM stop a
command cleanly (:mod:`vos.signals`) with ``vos <cmd>: interrupted`` (130) or ``vos <cmd>:
terminated`` (143).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from seggpt_model.config import ATTENTION_IMPLEMENTATIONS
from vos import __version__
from vos.errors import user_errors
from vos.signals import EXIT_INTERRUPTED, EXIT_TERMINATED, sigterm_received, terminate_on_sigterm

RUN_EPILOG = """\
masks on any frame: --mask K:FILE gives the label map of frame K (0-based index in decoding order,
the number of the output PNG); repeat it for more frames; --first-mask FILE means --mask 0:FILE.
A mask may add objects (tracked from frame K on) and correct known ones: output frame K is the
annotation for the objects it holds, other tracked objects keep their predicted pixels where the
annotation is background. Every annotated frame is a prompt (the --max-pinned most recent ones),
the most recent predicted frames fill the rest of --context.
backward: when the earliest mask is on frame A > 0, frames A-1 ... 0 are segmented in reverse
order from it alone (as vos run would on the reversed frames A, A-1, ..., 0); objects first
annotated on a frame K > A are not propagated backward before K. Frames 0..A-1 are kept on disk
(in the output's temporary folder) meanwhile, not in memory.

orientation: frames are rotated upright using the video's rotation metadata (display matrix)
before segmentation, so masks must have the upright (displayed) orientation and size.

examples:
  vos run clip.mp4 --first-mask clip_00000.png
  vos run DAVIS/JPEGImages/480p/bike-packing --first-mask DAVIS/Annotations/480p/bike-packing/00000.png \\
          --output results --overlay bike.mp4
  vos run clip.mp4 --mask 20:clip_00020.png --mask 55:new_object_00055.png
"""

MASK_EPILOG = """\
prompts: --text (one object per text, in order), --example IMG --example-mask M (one object) or
--classes C,... (one object per class of the SegFormer checkpoint's id2label); --instances gives
each connected component its own id. An object whose mask comes out empty is an error.

examples:
  vos mask clip.mp4 --text "a black swan" --output clip_00000.png --overlay check.png
  vos mask street.jpg --classes person,car --instances --output street_mask.png
  vos mask clip.mp4 --frame 10 --example other.jpg --example-mask other_mask.png --output m.png
  vos run clip.mp4 --first-mask clip_00000.png
"""


EVAL_EPILOG = """\
protocols (J region similarity = IoU, F boundary F-measure within ceil(0.008 * diagonal) pixels;
scores are fractions in [0, 1]):
  davis2017  the official DAVIS 2017 semi-supervised evaluation of --davis-root: the objects are
             ids 1..N of the first frame, 255 is void (background), the first and last frames
             are not scored; J and F with Mean, Recall and Decay, averaged over objects.
  sav        SAM 2's SA-V evaluator (vos-benchmark) on --gt-root: GT/<video>/<object>/<frame>.png
             binary masks (SA-V; results R/<video>/<object>/<frame>.png) or GT/<video>/<frame>.png
             id maps (MOSE, LVOS, YouTube-VOS train, DAVIS). Every id of the scored ground truth
             is an object (255 too), scored from the frame where it is first seen (in the ground
             truth or the results); the first and last frames of each object folder (SA-V) or
             video are not scored unless --keep-first-last; J, F and J&F are means over all
             objects of all videos. With --davis-root it reads ROOT/Annotations/480p and the
             --set list.

examples:
  vos eval --davis-root DAVIS --results results/davis --json davis.json
  vos eval --protocol sav --gt-root sav_val/Annotations_6fps --results results/sav_val --json sav.json
  vos eval --protocol sav --gt-root MOSE/train/Annotations --results results/mose_train
  vos eval --protocol sav --davis-root DAVIS --results results/davis
"""


def _add_device_args(p: argparse.ArgumentParser, what: str = "the models") -> None:
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda|cuda:N",
                   help=f"device for {what} (default: auto = cuda if available, else cpu)")
    p.add_argument("--dtype", default=None, metavar="auto|float32|bfloat16|float16",
                   help="model precision (default: auto = bfloat16 on cuda, float32 on cpu)")


#: ``--context`` help of each command that has it (the option is shared, its meaning is each command's).
CONTEXT_HELP = {
    "run": "prompts per frame: the annotated frames (the --max-pinned most recent) plus the most "
           "recent predicted frames (default: 8); fewer is quicker, the time a frame grows about as "
           "N + 1",
    "batch": "prompts per frame of each video, as in vos run: its annotated frames plus its most "
             "recent predicted frames (default: 8)",
    "image": "use at most N of the prompt image/mask pairs, the first ones (default: all of them)",
    "app": "prompts per frame of every session, as in vos run: the annotated frames plus the most "
           "recent predicted frames (default: 8)",
}


def _add_model_args(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--checkpoint", default=None, metavar="ID_OR_PATH",
                   help="hub repo id, hub-layout folder, .safetensors file or Painter .pth "
                        "(default: BAAI/seggpt-vit-large; offline, HF_HUB_OFFLINE=1 reads the "
                        "Hugging Face cache only)")
    _add_device_args(p)
    p.add_argument("--context", type=int, default=None, metavar="N", help=CONTEXT_HELP[command])
    p.add_argument("--attn", default=None, choices=("auto", *ATTENTION_IMPLEMENTATIONS),
                   help="attention kernel (default: auto = the fastest measured for the device: "
                        "on CUDA the record benchmarks/gpu_check.sh writes, else sdpa)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (with CUDA graphs on CUDA): slower start, fewer "
                        "kernel launches per frame; meant for GPUs")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="JSON file of defaults for these options (command-line flags win)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")


def _add_prompt_args(p: argparse.ArgumentParser, *, required: bool = False,
                     group: argparse._MutuallyExclusiveGroup | None = None) -> argparse._MutuallyExclusiveGroup:
    """First mask from words: --text / --example + --example-mask / --classes and their options
    (``transformers`` models, the prompts extra), in ``group`` (made here when None: the command's
    own mask options, added to the group before, are listed first in ``--help``). Returns the
    exclusive group of the prompt kinds."""
    group = group if group is not None else p.add_mutually_exclusive_group(required=required)
    group.add_argument("--text", action="append", default=None, metavar="T",
                       help="one object per text, ids 1, 2, ... in the order given (CLIPSeg; "
                            "repeat for several objects)")
    group.add_argument("--example", default=None, metavar="IMG",
                       help="an example image of the object (CLIPSeg visual prompt); one object")
    group.add_argument("--classes", action="append", default=None, metavar="C[,C...]",
                       help="semantic class names of the --class-model (ADE20K: person,car,...), "
                            "one object each, ids in the order given (SegFormer)")
    p.add_argument("--example-mask", default=None, metavar="M",
                   help="the object's mask in the --example image (any format --first-mask takes)")
    p.add_argument("--instances", action="store_true",
                   help="split each object into connected components (8-connected), one id each, "
                        "largest first; components under 0.1%% of the frame are dropped")
    p.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="--text/--example: a pixel is an object where its probability exceeds P "
                        "(default: 0.4)")
    p.add_argument("--text-model", default=None, metavar="ID_OR_PATH",
                   help="CLIPSeg hub id or save_pretrained folder (default: CIDAS/clipseg-rd64-refined)")
    p.add_argument("--class-model", default=None, metavar="ID_OR_PATH",
                   help="SegFormer hub id or save_pretrained folder "
                        "(default: nvidia/segformer-b5-finetuned-ade-640-640)")
    return group


def build_parser() -> argparse.ArgumentParser:
    """The ``vos`` argument parser with its six subcommands."""
    parser = argparse.ArgumentParser(
        prog="vos",
        description="Video object segmentation with SegGPT: give a video and its first frame's "
                    "mask (or a few words), get a DAVIS-format mask for every frame.",
    )
    parser.add_argument("--version", action="version", version=f"vos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # ---- vos run ---------------------------------------------------------------------------
    p = sub.add_parser(
        "run", help="segment one video from masks of its first (or any) frames",
        description="Stream one video (a file FFmpeg reads, or a folder of jpg/png frames sorted\n"
                    "by name) through SegGPT and write one DAVIS palette PNG per frame to\n"
                    "DIR/NAME/00000.png, ... plus DIR/NAME/manifest.json. A finished DIR/NAME is\n"
                    "never replaced without --overwrite. On a CPU, try --frames 0:6 --context 2\n"
                    "first: one line after the first frame estimates the whole run's time.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", metavar="VIDEO", help="video file (mp4, mkv, webm, avi, mov) or frame folder")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--first-mask", default=None, metavar="MASK",
                       help="first frame's annotation: DAVIS palette PNG, grayscale PNG of object ids "
                            "(or 0/255), or RGB colour mask (one object per colour); same as "
                            "--mask 0:MASK. Or propose it from words: --text, --example, --classes "
                            "(frame 0's mask from CLIPSeg / SegFormer, as vos mask writes it)")
    p.add_argument("--mask", dest="masks", action="append", default=None, metavar="K:FILE",
                   help="annotation of frame K (0-based, decoding order), any --first-mask format; "
                        "repeatable; frames before the earliest one are segmented backward from it "
                        "(see below). At least one of --first-mask / --mask / --text / --example "
                        "/ --classes is needed")
    p.add_argument("--frames", default=None, metavar="START:STOP",
                   help="segment only frames START..STOP-1 (0-based, STOP excluded, a Python slice "
                        "of the decoded frames; 10: and :50 work too); mask indices stay those of "
                        "the whole video and must fall inside (default: every frame)")
    p.add_argument("--output", default=None, metavar="DIR", help="output root (default: results)")
    p.add_argument("--name", default=None, metavar="NAME",
                   help="output sub-folder (default: the video's stem or the folder's name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished DIR/NAME (one with its manifest.json) when the new run "
                        "completes (default: such a folder is an error, left untouched)")
    _add_prompt_args(p, group=group)
    p.add_argument("--max-pinned", type=int, default=None, metavar="P",
                   help="annotated frames kept as prompts, the P most recent (default: 4)")
    _add_model_args(p, "run")
    p.add_argument("--per-object", action="store_true",
                   help="one binary pass per object, merged by the highest foreground score "
                        "(default: all objects in one pass, each in its own colour)")
    p.add_argument("--overlay", default=None, metavar="PATH.mp4",
                   help="also write an H.264 video of the frames with coloured masks")
    p.add_argument("--mask-video", default=None, metavar="PATH.mkv",
                   help="also write a lossless FFV1 gray video of the label maps")
    p.add_argument("--fps", type=float, default=None, metavar="F",
                   help="frame rate of --overlay and --mask-video for a folder of frames "
                        "(default: 24); a video file keeps its own timing")
    p.add_argument("--allow-partial", action="store_true",
                   help="keep the frames decoded before a corrupt part of the video instead of failing")
    p.add_argument("--address", default=None, metavar="auto|ray://HOST:PORT",
                   help="run the model stage on a Ray cluster actor instead of in-process")

    # ---- vos batch -------------------------------------------------------------------------
    p = sub.add_parser(
        "batch", help="segment many videos on a Ray cluster",
        description="Fan a dataset split or a manifest (JSONL or CSV with columns video, "
                    "first_mask, optional name) out over Ray actors, one SegGPT model per actor. "
                    "Dataset layouts, detected from what the root holds: davis (Annotations/480p), "
                    "youtube-vos (meta.json, JPEGImages, Annotations; 2018 and 2019), lvos "
                    "(*_meta.json, JPEGImages, Annotations; v1 and v2), sa-v (JPEGImages_24fps, "
                    "Annotations_6fps), mose (JPEGImages, Annotations: also DAVIS test-dev exports).")
    p.add_argument("source", metavar="SOURCE",
                   help="dataset root (davis, youtube-vos, mose, sa-v, lvos) or manifest (.jsonl / .csv)")
    p.add_argument("--layout", default=None, choices=["davis", "youtube-vos", "mose", "sa-v", "lvos"],
                   help="the dataset layout of SOURCE (default: detected from what it holds)")
    p.add_argument("--all-frames", default=None, metavar="DIR",
                   help="youtube-vos/lvos: folder of every frame of each video (DIR/VIDEO/STEM.jpg) "
                        "to propagate over; only the split's frames are written")
    p.add_argument("--submission", default=None, metavar="FILE.zip",
                   help="pack the results as the benchmark server wants them (youtube-vos, lvos: "
                        "Annotations/VIDEO/; davis test-dev, mose: VIDEO/ at the root)")
    p.add_argument("--output", default=None, metavar="DIR", help="output root (default: results)")
    p.add_argument("--address", default=None, metavar="auto|ray://HOST:PORT",
                   help="join this Ray cluster (default: start a local one)")
    p.add_argument("--num-actors", type=int, default=None, metavar="N",
                   help="model replicas (default: one per GPU, or 1 on CPU-only clusters)")
    p.add_argument("--gpus-per-actor", type=float, default=None, metavar="G",
                   help="GPUs per actor, fractions allowed (default: 1 if GPUs exist, else 0)")
    p.add_argument("--cpus-per-actor", type=float, default=None, metavar="C",
                   help="CPUs per actor (default: 1)")
    _add_model_args(p, "batch")
    p.add_argument("--resume", action="store_true",
                   help="skip videos whose complete output and manifest entry exist")
    p.add_argument("--max-retries", type=int, default=None, metavar="R",
                   help="retries of a video whose actor died (default: 2)")
    p.add_argument("--eval", action="store_true", help="run vos eval on the outputs (DAVIS roots)")

    # ---- vos eval --------------------------------------------------------------------------
    p = sub.add_parser(
        "eval", help="J&F evaluation: the official DAVIS 2017 protocol or SAM 2's SA-V protocol",
        description="Score a results folder against ground truth with the official DAVIS 2017\n"
                    "semi-supervised J&F protocol (--davis-root; only Annotations/480p is read) or\n"
                    "with the protocol of SAM 2's SA-V evaluator, vos-benchmark (--gt-root: SA-V,\n"
                    "MOSE, LVOS, YouTube-VOS train).",
        epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", default=None, choices=["davis2017", "sav"],
                   help="davis2017 (the default with --davis-root) or sav (the default with "
                        "--gt-root); see below")
    p.add_argument("--davis-root", default=None, metavar="ROOT",
                   help="DAVIS root folder (ground truth in ROOT/Annotations/480p)")
    p.add_argument("--gt-root", default=None, metavar="GT",
                   help="sav: folder of ground-truth video folders, GT/<video>/<object>/<frame>.png "
                        "(SA-V) or GT/<video>/<frame>.png (id maps)")
    p.add_argument("--results", required=True, metavar="DIR",
                   help="results folder, one sub-folder per video shaped like the ground truth")
    p.add_argument("--keep-first-last", action="store_true",
                   help="sav: also score the first and last annotated frame of each object")
    p.add_argument("--set", dest="subset", default=None, choices=["val", "train", "test-dev"],
                   help="DAVIS image set (default: val)")
    p.add_argument("--year", default=None, choices=["2017", "2016"],
                   help="DAVIS year (default: 2017)")
    p.add_argument("--sequences", nargs="+", default=None, metavar="S",
                   help="evaluate only these sequences / videos")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: all cores)")
    p.add_argument("--json", default=None, metavar="PATH", help="write all results as JSON")
    p.add_argument("--csv-dir", default=None, metavar="DIR",
                   help="davis2017: write global_results-<set>.csv and "
                        "per-sequence_results-<set>.csv")

    # ---- vos image -------------------------------------------------------------------------
    p = sub.add_parser(
        "image", help="segment images from one or more prompt image/mask pairs (or words)",
        description="One-shot or few-shot (feature ensemble) in-context segmentation of images. "
                    "With --text/--example/--classes the prompt masks are proposed on the prompt "
                    "images (default: the first query) by CLIPSeg or SegFormer (prompts extra).")
    p.add_argument("queries", nargs="+", metavar="QUERY", help="images to segment")
    p.add_argument("--prompt-image", nargs="+", default=None, metavar="P",
                   help="prompt images (with a word prompt: default the first QUERY)")
    group = _add_prompt_args(p, required=True)
    group.add_argument("--prompt-mask", nargs="+", default=None, metavar="M",
                       help="prompt masks, one per --prompt-image; or propose them from words with "
                            "--text, --example/--example-mask or --classes")
    p.add_argument("--num-labels", type=int, default=None, metavar="N",
                   help="classes besides background when masks are label maps (palette colours)")
    p.add_argument("--output", default=None, metavar="DIR", help="output folder (default: results)")
    p.add_argument("--overlay", action="store_true", help="also write an overlay PNG per query")
    _add_model_args(p, "image")

    # ---- vos mask --------------------------------------------------------------------------
    p = sub.add_parser(
        "mask", help="propose a first-frame mask from words, an example or class names",
        description="Write the first-frame annotation a model proposes (CLIPSeg for --text and\n"
                    "--example, SegFormer for --classes) as a DAVIS palette PNG at the frame's size,\n"
                    "to look at, edit in any paint tool and pass to vos run --first-mask.\n"
                    "Needs the prompts extra: pip install 'seggpt-vos[prompts]'.",
        epilog=MASK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="IMAGE_OR_VIDEO",
                   help="an image, a video file or a frame folder")
    _add_prompt_args(p, required=True)
    p.add_argument("--frame", type=int, default=0, metavar="N",
                   help="for a video or frame folder: its frame N, upright as vos run sees it "
                        "(default: 0)")
    _add_device_args(p, "the proposal model")
    p.add_argument("--output", required=True, metavar="MASK.png", help="the mask PNG to write")
    p.add_argument("--overlay", default=None, metavar="PNG",
                   help="also write the frame with the coloured mask")
    # ---- vos app ---------------------------------------------------------------------------
    p = sub.add_parser(
        "app", help="a web page to annotate, propagate, correct and export a video",
        description="Serve a Gradio page to open a video, mark objects on any frame (paint, import "
                    "a mask PNG, or words), propagate, correct and export, with the API endpoints "
                    "/open_video, /add_mask, /propagate, /export and /export_videos. One model, "
                    "loaded once, serves every browser tab; results equal vos run's. Needs the app "
                    'extra: pip install "seggpt-vos[app]".')
    p.add_argument("video", nargs="?", default=None, metavar="VIDEO",
                   help="a video (file or frame folder) every new session opens at start")
    p.add_argument("--max-pinned", type=int, default=None, metavar="P",
                   help="annotated frames kept as prompts, the P most recent (default: 4)")
    _add_model_args(p, "app")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="interface to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, metavar="N", help="TCP port (default: 7860)")
    p.add_argument("--text-model", default=None, metavar="ID_OR_PATH",
                   help="CLIPSeg checkpoint for the page's word prompts (default: "
                        "CIDAS/clipseg-rd64-refined; needs the prompts extra)")

    return parser


# subcommand -> module whose ``main(args) -> int`` runs it (imported lazily)
_COMMANDS = {name: f"vos.commands.{name}" for name in ("run", "batch", "eval", "image", "mask", "app")}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vos`` console script. Returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    previous = warnings.formatwarning      # warnings read "vos CMD: warning: ..." while CMD runs
    warnings.formatwarning = lambda message, category, *a, **k: f"vos {args.command}: warning: {message}\n"
    try:
        return _dispatch(args)
    finally:
        warnings.formatwarning = previous       # callers in the same process keep their format


def _dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command: one-line errors (2), Ctrl-C (130) and SIGTERM (143)."""
    try:
        with terminate_on_sigterm():
            # the command's module only now: `vos --help` and the parser need no torch, av or ray
            module = importlib.import_module(_COMMANDS[args.command])
            try:
                return int(module.main(args) or 0)
            except user_errors() as exc:
                print(f"vos {args.command}: error: {exc}", file=sys.stderr)
                return 2
    except KeyboardInterrupt:          # Ctrl-C, or SIGTERM (vos.signals.Terminated)
        if sigterm_received():
            print(f"vos {args.command}: terminated", file=sys.stderr)
            return EXIT_TERMINATED
        print(f"vos {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
