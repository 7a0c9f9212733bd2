"""`VisualBatch`, re-exported where the model's callers first found it.

The class lives in `onevision.visual_batch`, which data code may import without depending on
the model (docs/architecture.md, "Dependency direction"). New code imports it from there;
this name stays for `onevision.infer` and `onevision.train`, which still import it from here.
"""

from onevision.visual_batch import VisualBatch

__all__ = ["VisualBatch"]
