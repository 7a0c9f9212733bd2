"""Visual token budget: exact token counts for images, image sets and videos.

Pure geometry (no model code), so a data worker can plan a sample without building a model:

    from onevision.budget import VisualSettings, ImageMedia, VideoMedia, plan_sample
    plan = plan_sample([ImageMedia(640, 480)], VisualSettings())
    plan.total  # 2929
"""

from onevision.budget.anyres import (
    default_grid_pinpoints,
    downscaled_shape,
    select_best_resolution,
    unpadded_shape,
)
from onevision.budget.planner import (
    AnyResPlan,
    BaseImagePlan,
    BudgetError,
    ImageMedia,
    SamplePlan,
    VideoMedia,
    VideoPlan,
    VisualSettings,
    plan_sample,
)

__all__ = [
    "AnyResPlan",
    "BaseImagePlan",
    "BudgetError",
    "ImageMedia",
    "SamplePlan",
    "VideoMedia",
    "VideoPlan",
    "VisualSettings",
    "default_grid_pinpoints",
    "downscaled_shape",
    "plan_sample",
    "select_best_resolution",
    "unpadded_shape",
]
