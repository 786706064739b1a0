"""lymphosort.report: the HTML/Markdown report of a pipeline run folder.

`build_report(RUN) -> (html, md)` reads only `RUN/stages/*/stage.json` and the files they
name. `embedding_map` and `plot_latency_histogram` draw figures the pipeline stages store.
Imports are lazy so `import lymphosort.report` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "embedding_map", "plot_latency_histogram"]

_WHERE = {
    "build_report": "lymphosort.report.build",
    "embedding_map": "lymphosort.report.embedding",
    "plot_latency_histogram": "lymphosort.report.plots",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'lymphosort.report' has no attribute {name!r}")
