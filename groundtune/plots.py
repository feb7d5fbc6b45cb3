"""The training-loss curve every run writes (loss.png) beside its adapter."""

from __future__ import annotations

from pathlib import Path

from groundtune.fileio import save_figure


def plot_losses(losses: list[dict], path: Path, title: str = "training loss") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, values = [r["step"] for r in losses], [r["loss"] for r in losses]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, values, lw=1, alpha=0.45, label="per step")
    window = max(1, len(values) // 10)  # small batches make single steps noisy: the trend is the running mean
    if window > 1:
        chunks = (values[max(0, i - window + 1):i + 1] for i in range(len(values)))
        running = [sum(chunk) / len(chunk) for chunk in chunks]
        ax.plot(steps, running, lw=2, label=f"mean of last {window}")
        ax.legend(frameon=False)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("answer-token loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
