"""`onevision train`: run one curriculum stage from a recipe.

Examples:
    onevision train stage1 model.size=debug data.recipe=my/recipe.yaml output_root=/tmp/runs
    onevision train stage1_5 output_root=/tmp/runs          # starts from /tmp/runs/stage1/hf
    onevision train path/to/my_stage.yaml loop.steps=100 --print-config
    torchrun --nproc_per_node 8 -m onevision train stage2_ov distributed.strategy=deepspeed

CONFIG is a shipped stage name (stage1, stage1_5, stage2_si, stage2_ov, video) or a YAML
path; every `key.path=value` after it overrides a field (values are YAML scalars). Several
processes: scripts/launch_torchrun.sh or scripts/launch_deepspeed.sh.
"""

from __future__ import annotations

import argparse

import yaml

from onevision.cli.errors import InputError, reading


def register(subparsers) -> None:
    from onevision.train.config import stage_names

    parser = subparsers.add_parser(
        "train",
        help="train one curriculum stage (stage1, stage1_5, stage2_si, stage2_ov, video, or a YAML)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", metavar="CONFIG", help=f"stage name ({', '.join(stage_names())}) or recipe YAML path")
    # REMAINDER: overrides may come before or after --print-config (argparse cannot intermix them).
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE", help="field overrides, e.g. model.size=debug loop.steps=10")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train the stage; bad config, overrides or data raise for main() to report (exit 2)."""
    from onevision.train.config import load_stage, stage_to_dict

    overrides = [item for item in args.overrides if item != "--print-config"]
    print_config = args.print_config or len(overrides) < len(args.overrides)
    unknown = [item for item in overrides if item.startswith("-")]
    if unknown:
        raise InputError(f"unknown option(s) {unknown}; overrides are key.path=value")
    malformed = [item for item in overrides if "=" not in item]
    if malformed:
        raise InputError(f"overrides are key.path=value, got {malformed}")
    with reading("CONFIG", args.config):
        stage = load_stage(args.config, overrides)
    if print_config:
        print(yaml.safe_dump(stage_to_dict(stage), sort_keys=False), end="")
        return 0
    from onevision.train.runner import run_stage

    result = run_stage(stage)
    if result.export_dir is not None:
        print(f"exported {result.export_dir}")
    if result.adapter_dir is not None:
        print(f"LoRA adapter {result.adapter_dir}")
    return 0
