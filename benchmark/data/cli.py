"""Data commands: dataset-info, make-splits, import-splits, synth."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmark.data.annotations import FORMATS, load_annotations
from benchmark.data.box_annotations import BOX_FORMATS, detect_box_format
from benchmark.errors import InputError
from benchmark.data.splits import REPO_SPLITS, SETTINGS, generate_splits, import_split_lists, write_splits


def dataset_info(annotations) -> dict:
    """Per subset: videos, instances, classes, median instance length as a fraction of duration."""
    info = {}
    for subset in annotations.subsets():
        videos = annotations.subset(subset)
        fractions = [(i.end - i.start) / v.duration for v in videos if v.duration for i in v.instances]
        info[subset] = {
            "videos": len(videos),
            "instances": sum(len(v.instances) for v in videos),
            "classes": len({i.label for v in videos for i in v.instances}),
            "median_length_fraction": float(np.median(fractions)) if fractions else None,
        }
    return {"file": annotations.source, "format": annotations.format, "classes": len(annotations.classes),
            "subsets": info, "warnings": annotations.skipped}


def _cmd_dataset_info(args) -> int:
    if args.format in BOX_FORMATS or args.format is None and detect_box_format(args.annotations):
        return _print_box_info(args)
    info = dataset_info(load_annotations(args.annotations, args.format))
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    from tabulate import tabulate

    rows = [[s, d["videos"], d["instances"], d["classes"],
             "n/a" if d["median_length_fraction"] is None else f"{d['median_length_fraction']:.3f}"]
            for s, d in info["subsets"].items()]
    print(f"{info['file']} ({info['format']}, {info['classes']} classes)")
    print(tabulate(rows, headers=["subset", "videos", "instances", "classes", "median length / duration"],
                   intfmt=","))
    for why, n in info["warnings"].items():
        print(f"note: {n} × {why}")
    return 0


def _print_box_info(args) -> int:
    """dataset-info of a box-level file (ACT pkl, UCF101-24 pyannot, ST-CLIP JSON, AVA CSV)."""
    import warnings

    from tabulate import tabulate

    from benchmark.data.box_annotations import box_dataset_info, load_box_annotations

    with warnings.catch_warnings():  # the notes are printed below
        warnings.simplefilter("ignore", UserWarning)
        info = box_dataset_info(load_box_annotations(args.annotations, args.format))
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    columns = ["videos", "annotated_frames", "frames_with_boxes", "boxes", "tubes", "classes"]
    rows = [[s] + ["n/a" if d[c] is None else d[c] for c in columns] for s, d in info["subsets"].items()]
    print(f"{info['file']} ({info['format']}, {info['classes']} classes)")
    print(tabulate(rows, headers=["subset"] + [c.replace("_", " ") for c in columns], intfmt=","))
    for why, n in info["warnings"].items():
        print(f"note: {n} × {why}")
    return 0


def _ratios(text: str) -> list[float]:
    return [float(r) for r in text.split(",")]


def _cmd_make_splits(args) -> int:
    classes = load_annotations(args.annotations, args.format).classes
    for ratio in _ratios(args.ratios):
        paths = write_splits(generate_splits(args.dataset, classes, ratio, args.n, args.seed), args.out)
        print(f"{args.dataset} {SETTINGS[ratio]}: {len(paths)} splits -> {paths[0].parent}")
    return 0


def _cmd_import_splits(args) -> int:
    if args.family == "stclip":
        return _import_stclip(args)
    classes = load_annotations(args.annotations, args.format).classes
    for ratio in _ratios(args.ratios):
        splits = import_split_lists(args.lists, args.dataset, classes, ratio)
        where = ""
        if args.out:
            where = f" -> {write_splits(splits, args.out)[0].parent}"
        print(f"{args.dataset} {SETTINGS[ratio]}: {len(splits)} valid splits "
              f"({len(splits[0].seen)} seen / {len(splits[0].unseen)} unseen){where}")
    return 0


def _import_stclip(args) -> int:
    """ST-CLIP's label_split_<i>/ lists against a box-level annotation file, and the nearest-seen audit."""
    from benchmark.data.box_annotations import load_box_annotations
    from benchmark.data.splits import import_stclip_lists, nearest_seen

    ann = load_box_annotations(args.annotations, args.format)
    # the lists name bare videos; the ACT layout keys them class/video
    classes = {video.rsplit("/", 1)[-1]: next(iter(labels)) for video, labels in ann.video_classes.items() if len(labels) == 1}
    splits = import_stclip_lists(args.lists, args.dataset, ann.labels, classes)
    where = f" -> {write_splits(splits, args.out)[0].parent}" if args.out else ""
    print(f"{args.dataset} stclip: {len(splits)} valid splits ({len(splits[0].seen)} seen / {len(splits[0].unseen)} unseen){where}")
    if args.audit_model:
        from tabulate import tabulate

        from benchmark.text.clip import TextEncoderConfig, class_embeddings
        from benchmark.text.prompts import natural_name

        cfg = TextEncoderConfig(args.audit_model, args.audit_pretrained)

        def embed(names):
            return class_embeddings(cfg, [natural_name(n) for n in names])

        for split in splits:
            print(f"\nsplit {split.index}: the closest seen name of each unseen name ({args.audit_model}, {args.audit_pretrained})")
            print(tabulate(nearest_seen(split, embed), headers=["unseen", "closest seen", "cosine"], floatfmt=".3f"))
    return 0


def _cmd_synth(args) -> int:
    from dataclasses import replace

    from benchmark.data import synthetic_stad
    from benchmark.data.synthetic import PROFILES, generate

    if args.profile in synthetic_stad.PROFILES:
        if args.videos or args.classes:
            raise InputError("--videos and --classes apply to the temporal profiles only")
        out = synthetic_stad.generate(args.out, replace(synthetic_stad.PROFILES[args.profile], seed=args.seed))
        print(f"synthetic box-level benchmark written to {out} (annotations/, features/, text_encoder/, synthetic.json)")
        return 0

    overrides = {k: v for k, v in (("classes", args.classes), ("train_videos", args.videos and args.videos * 2 // 3),
                                   ("val_videos", args.videos and args.videos - args.videos * 2 // 3)) if v}
    out = generate(args.out, replace(PROFILES[args.profile], seed=args.seed, **overrides))
    print(f"synthetic benchmark written to {out} (annotations.json, features/, text_encoder/, synthetic.json)")
    return 0


def register(subparsers) -> None:
    def annotations_args(p, boxes: bool = False):
        what = "ActivityNet, BMN, ActionFormer or G-TAD JSON"
        if boxes:
            what += "; or box-level: ACT *-GT.pkl, UCF101-24 pyannot pkl, ST-CLIP JSON, AVA CSV"
        p.add_argument("--annotations", required=True, help=f"annotation file ({what})")
        p.add_argument("--format", choices=FORMATS + (BOX_FORMATS if boxes else ()), help="override format auto-detection")

    p = subparsers.add_parser("dataset-info", help="videos, instances and classes per subset of an annotation file")
    annotations_args(p, boxes=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_dataset_info)

    p = subparsers.add_parser("make-splits", help="generate seeded seen/unseen class splits into splits/")
    annotations_args(p)
    p.add_argument("--dataset", required=True, help="dataset name used in the split files, e.g. ActivityNet")
    p.add_argument("--ratios", default="0.75,0.5", help="seen-class ratios (default 0.75,0.5)")
    p.add_argument("--n", type=int, default=10, help="splits per ratio (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO_SPLITS, help="root folder (default: the repo's splits/)")
    p.set_defaults(func=_cmd_make_splits)

    p = subparsers.add_parser("import-splits", help="validate published split lists (train_75_test_25/<dataset>/{train,test}/split_i.list, or ST-CLIP label_split_<i>/ with --family stclip)")
    annotations_args(p, boxes=True)
    p.add_argument("--lists", required=True, type=Path, help="root holding train_75_test_25/ and train_50_test_50/")
    p.add_argument("--dataset", required=True, help="folder name in the lists, e.g. ActivityNet or THUMOS14")
    p.add_argument("--ratios", default="0.75,0.5")
    p.add_argument("--out", type=Path, help="also write them as split JSON files under this root")
    p.add_argument("--family", choices=("ratios", "stclip"), default="ratios",
                   help="ratios: the 75/25 and 50/50 lists; stclip: ST-CLIP's label_split_<i>/{train,test}_{label,video}.txt "
                        "against a box-level annotation file")
    p.add_argument("--audit-model", help="stclip: print the closest seen name of every unseen name, by this open_clip "
                                         "text tower's similarity (e.g. ViT-B-16)")
    p.add_argument("--audit-pretrained", default="openai", help="its weights: tag or checkpoint file")
    p.set_defaults(func=_cmd_import_splits)

    p = subparsers.add_parser("synth", help="generate the synthetic benchmark (ActivityNet- or THUMOS-shaped) in the real formats")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", choices=("smoke", "default", "large", "thumos_smoke", "thumos", "jhmdb", "jhmdb_smoke", "ucf",
                                         "ucf_smoke", "ava", "ava_smoke"), default="default",
                   help="benchmark.data.synthetic.PROFILES (thumos*: THUMOS-shaped, ActionFormer format); box level: "
                        "benchmark.data.synthetic_stad.PROFILES (J-HMDB-, UCF101-24- or AVA-shaped)")
    p.add_argument("--videos", type=int, help="total videos (2/3 training, 1/3 validation)")
    p.add_argument("--classes", type=int, help="number of classes")
    p.set_defaults(func=_cmd_synth)

    p = subparsers.add_parser(
        "extract-features", help="CLIP image features of raw videos, in the layouts the feature stores read",
        description="Sample frames (--fps or --frames), RGB, the open_clip model's own preprocessing, the image tower in "
                    "batches; [T_raw, D] per video as <prefix><id>.npy or one HDF5 file, extraction.json beside them. "
                    "Finished videos are skipped; a video that cannot be decoded is reported and the others continue.")
    p.add_argument("--videos", required=True, type=Path, help="a folder of videos, or a text file with one path per line")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--model", default="ViT-B-16", help="open_clip model name or model-config JSON (default ViT-B-16)")
    p.add_argument("--pretrained", default="openai", help="open_clip tag (from the local cache) or checkpoint file")
    rate = p.add_mutually_exclusive_group(required=True)
    rate.add_argument("--fps", type=float, help="frames per second of video")
    rate.add_argument("--frames", type=int, help="a fixed number of frames per video")
    p.add_argument("--format", choices=("npy", "h5"), default="npy")
    p.add_argument("--prefix", default="v_", help="output name = prefix + file stem (default v_, ActivityNet's rule; '' keeps the stem)")
    p.add_argument("--normalise", action="store_true", help="L2-normalise each frame's feature")
    p.add_argument("--channel-order", choices=("rgb", "bgr"), default="rgb",
                   help="bgr only reproduces features made with the OpenCV BGR bug (red and blue swapped); rgb is correct")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (bf16 autocast on CUDA); several, comma-separated (cuda:0,cuda:1): one process each")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="decoding threads (ahead of the model)")
    p.set_defaults(func=_cmd_extract)


def _cmd_extract(args) -> int:
    from benchmark.data.extract import Options, Sampling, extract, video_list

    options = Options(args.model, args.pretrained, Sampling(args.fps, args.frames, args.channel_order), args.format,
                      args.prefix, args.normalise, args.device, args.batch_size, args.workers)
    summary = extract(video_list(args.videos), args.out, options)
    failed = summary["failed"]
    print(f"{summary['done']} extracted, {summary['skipped']} already done, {len(failed)} failed"
          + (f" ({', '.join(sorted(failed))})" if failed else "") + f"; {args.out}/")
    return 1 if failed else 0
