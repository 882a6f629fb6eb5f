"""Matplotlib helpers shared by the figure modules (headless backend, one way to save)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from . import _outputs


def plt():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save(fig, path: Path, provenance: dict | None = None) -> Path:
    """Write ``fig`` to ``path`` atomically (folders created) and close it.

    ``provenance`` (see :func:`hmi_fast._outputs.provenance`) goes into the
    PNG's text chunks: ``Software`` (package version and commit),
    ``Description`` (the command line) and ``Comment`` (the whole record, JSON).
    """
    path = Path(path)
    meta = None
    if provenance is not None:
        meta = {"Software": _outputs.version_string(), "Description": str(provenance.get("command")),
                "Comment": json.dumps(provenance, default=str)}
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight", metadata=meta)
    plt().close(fig)
    return _outputs.write_bytes(path, buf.getvalue())


class FigureRun:
    """The outputs of one figure, under one naming scheme, with provenance and stage timings.

    A figure named ``stem`` writes ``OUT/stem.png``, ``OUT/stem_data.csv``
    (or ``.npz``), ``OUT/stem_summary.json`` and, for resumable runs, the
    folder ``OUT/stem/``. The summary holds the provenance record.
    """

    def __init__(self, out_dir, stem: str, *, command: str | None = None, seeds=None):
        import time

        self.out = Path(out_dir)
        self.stem = stem
        self.command = command
        self.seeds = None if seeds is None else [int(s) for s in seeds]
        self.started = time.time()
        self.timings: dict[str, float] = {}

    def path(self, suffix: str) -> Path:
        """``OUT/stem`` + suffix: ``".png"``, ``"_data.csv"``, ``"_summary.json"``, ``""`` (the run folder)."""
        return self.out / f"{self.stem}{suffix}"

    def stage(self, name: str):
        """``with run.stage("stream"):`` adds the body's wall time to ``timings[name]``."""
        import contextlib
        import time

        @contextlib.contextmanager
        def timer():
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

        return timer()

    def finish(self, fig, summary: dict, data: list) -> dict:
        """Save the figure, then the summary (with ``files`` and ``provenance``); return the summary."""
        prov = _outputs.provenance(command=self.command, seeds=self.seeds, timings=self.timings,
                                   started=self.started)
        png = save(fig, self.path(".png"), prov)
        summary_path = self.path("_summary.json")
        summary = {**summary, "files": {"figure": str(png), "data": [str(p) for p in data],
                                        "summary": str(summary_path)}, "provenance": prov}
        _outputs.write_json(summary_path, summary)
        return summary
