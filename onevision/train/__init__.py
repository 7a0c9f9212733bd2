"""Training: curriculum stages as recipes, one plain loop, single process / DDP / DeepSpeed.

    from onevision.train import load_stage, run_stage
    stage = load_stage("stage1", ["model.size=debug", "data.recipe=my_recipe.yaml"])
    result = run_stage(stage)          # result.export_dir feeds stage 1.5's model.init_from

Stage recipes ship in onevision/train/stages/ (stage1, stage1_5, stage2_si, stage2_ov, video);
`onevision train STAGE [key=value ...]` is the command-line face. A run that cannot go on raises
a `TrainError` (errors.py) whose message is one line naming the file, field or sample at fault.
"""

from onevision.train.config import StageConfig, load_stage, stage_names, stage_path
from onevision.train.errors import TrainError
from onevision.train.runner import StageResult, run_stage

__all__ = ["StageConfig", "StageResult", "TrainError", "load_stage", "run_stage", "stage_names", "stage_path"]
