"""Matplotlib helpers shared by the figure modules (headless backend, one way to save)."""

from __future__ import annotations

from pathlib import Path


def plt():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt().close(fig)
    return path
