"""``weyl export CHECKPOINT OUT.pt``: a checkpoint's model weights as one ``torch.save`` file."""

from __future__ import annotations

import sys

from weyl.commands.command_parser import CommandParser


def main(argv: list[str]) -> int:
    """Entry point of ``weyl export``: 0 when the file was written, 2 when the input is no checkpoint."""
    parser = CommandParser(
        prog="weyl export",
        description=(
            "Write the model weights of a checkpoint (sharded DCP or older single-file format) "
            "as one torch.save file holding {name: tensor}, loadable with "
            "torch.load(OUT, weights_only=True) and model.load_state_dict anywhere, without "
            "weyl or a process group."
        ),
    )
    parser.add_argument("checkpoint", help="a checkpoint dir: <run_dir>/checkpoints/step_XXXXXXXX")
    parser.add_argument("out", help="the .pt file to write")
    args = parser.parse_args(argv)
    from weyl.train.sharded_state import UnsafeCheckpointError, export_model_weights

    try:
        count = export_model_weights(args.checkpoint, args.out)
    except (ValueError, UnsafeCheckpointError, FileNotFoundError) as exc:
        print(f"weyl export: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"wrote {count} tensors to {args.out}")
    return 0
