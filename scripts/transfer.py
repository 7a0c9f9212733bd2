"""Cross-scenario transfer experiment on the synthetic world (same as `onevision transfer`).

    python scripts/transfer.py                       # single-image vs OneVision from stage 1.5
    python scripts/transfer.py --recipes single_image,multi_image,video,onevision --out runs/transfer
    python scripts/transfer.py --quick --out /tmp/transfer

Reuses the demo's cached pretraining and stages 1 / 1.5 (`onevision demo` first makes them;
otherwise they are trained here). See onevision/demo/transfer.py.

It runs the command rather than importing the CLI's modules: nothing imports the CLI
(docs/architecture.md, "Dependency direction"), and the flags stay defined in one place.
"""

import os
import sys

if __name__ == "__main__":
    command = [sys.executable, "-m", "onevision", "transfer", *sys.argv[1:]]
    os.execv(sys.executable, command)
