"""The CPU demo and the cross-scenario transfer experiment on the synthetic world.

    from onevision.demo import full_config, quick_config, run_demo, run_transfer
    run_demo(full_config(seed=0), "runs/demo")          # `onevision demo`
    run_transfer(full_config(seed=0), "runs/transfer")  # `onevision transfer`

Both pretrain a small Qwen2 decoder and SigLIP tower on the world, run the curriculum with the
shared training code and score every scenario with the shared evaluator; see `demo.py` and
`transfer.py`.
"""

from onevision.demo.config import (
    STAGES,
    DemoConfig,
    StagePlan,
    full_config,
    quick_config,
)
from onevision.demo.demo import DemoResult, run_demo
from onevision.demo.transfer import TransferResult, run_transfer

__all__ = [
    "STAGES",
    "DemoConfig",
    "DemoResult",
    "StagePlan",
    "TransferResult",
    "full_config",
    "quick_config",
    "run_demo",
    "run_transfer",
]
