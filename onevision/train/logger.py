"""What a user watches while a stage trains: progress bar, TensorBoard, W&B, a loss-curve PNG.

`TrainLogger.log_step(step, scalars)` on rank 0:
- moves the progress bar (loss, tokens/s, learning rate, ETA; `onevision.utils.progress`);
- writes TensorBoard scalars under output_dir/tensorboard: train/loss,
  train/loss_<modality>, lr/<group>, train/grad_norm, perf/tokens_per_s,
  data/padding_ratio, data/skipped, ...;
- logs the same to Weights & Biases when enabled (wandb is imported only then);
- keeps the history, which is saved with checkpoints (`state_dict`) so the curve of a
  resumed run covers the whole run.
`close()` draws output_dir/loss_curve.png (matplotlib, Agg backend) and closes the writers.
Other ranks get a logger that does nothing.
"""

from __future__ import annotations

from pathlib import Path

from onevision.train.config import LoggingSection


class TrainLogger:
    """Progress, scalars and the loss curve of one run (active on rank 0 only).

    Args:
        output_dir: the stage's folder.
        section: what to log where.
        total_steps: optimizer steps of the run (for the bar and its ETA).
        active: False on ranks other than 0.
        run_config: the stage config as plain data (W&B run config).
        name: run name (W&B).
        log_every: write scalars to TensorBoard / W&B every this many steps (the bar moves every step).
    """

    def __init__(self, output_dir: str | Path, section: LoggingSection, total_steps: int, active: bool = True, run_config: dict | None = None, name: str = "train", log_every: int = 1):
        self.output_dir = Path(output_dir)
        self.section = section
        self.total_steps = total_steps
        self.active = active
        self.run_config = run_config or {}
        self.name = name
        self.log_every = max(1, log_every)
        self.history: list[dict] = []
        self.evals: list[dict] = []
        self._bar = None
        self._tb = None
        self._wandb = None

    def start(self, step: int) -> None:
        """Open the bar and writers, continuing from `step` (0 for a fresh run)."""
        if not self.active:
            return
        self.history = [h for h in self.history if h["step"] <= step]
        self.evals = [h for h in self.evals if h["step"] <= step]
        if self.section.progress:
            from onevision.utils.progress import progress_bar

            self._bar = progress_bar(total=self.total_steps, initial=step, desc=self.name, unit="step")
        if self.section.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=step + 1 if step else None)
        if self.section.wandb:
            import wandb

            self._wandb = wandb.init(project=self.section.wandb_project, name=self.name, config=self.run_config, dir=str(self.output_dir), resume="allow")

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        """Record the scalars of optimizer step `step` (names like 'train/loss', 'lr/default')."""
        if not self.active:
            return
        self.history.append({"step": step, **scalars})
        if self._bar is not None:
            shown = {"loss": f"{scalars.get('train/loss', float('nan')):.4f}"}
            if "perf/tokens_per_s" in scalars:
                shown["tok/s"] = f"{scalars['perf/tokens_per_s']:.0f}"
            lrs = [v for k, v in scalars.items() if k.startswith("lr/")]
            if lrs:
                shown["lr"] = f"{max(lrs):.2e}"
            self._bar.set_postfix(shown, refresh=False)
            self._bar.update(step - self._bar.n)
        if step % self.log_every == 0 or step == self.total_steps:
            self._write(step, scalars)

    def log_eval(self, step: int, scalars: dict[str, float]) -> None:
        """Record evaluator results of step `step` (names like 'eval/loss')."""
        if not self.active:
            return
        self.evals.append({"step": step, **scalars})
        self._write(step, scalars)
        if self._bar is not None:
            self._bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))

    def _write(self, step: int, scalars: dict[str, float]) -> None:
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def state_dict(self) -> dict:
        """History to store in checkpoints (JSON-able)."""
        return {"history": self.history, "evals": self.evals}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))
        self.evals = list(state.get("evals", []))

    def close(self) -> Path | None:
        """Close the bar and writers; draw the loss curve. Returns the PNG path (rank 0)."""
        if not self.active:
            return None
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        return self.plot() if self.section.plot and self.history else None

    def plot(self) -> Path:
        """Loss (and per-modality loss, eval loss) against step, as output_dir/loss_curve.png."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        steps = [h["step"] for h in self.history]
        ax.plot(steps, [h.get("train/loss") for h in self.history], label="train loss", linewidth=1.5)
        keys = sorted({k for h in self.history for k in h if k.startswith("train/loss_")})
        for key in keys:
            points = [(h["step"], h[key]) for h in self.history if key in h]
            ax.plot(*zip(*points), label=key.removeprefix("train/"), linewidth=0.8, alpha=0.7)
        if self.evals:
            points = [(h["step"], h["eval/loss"]) for h in self.evals if "eval/loss" in h]
            if points:
                ax.plot(*zip(*points), "o-", label="eval loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("cross-entropy")
        ax.set_title(self.name)
        ax.grid(alpha=0.3)
        ax.legend()
        path = self.output_dir / "loss_curve.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path
