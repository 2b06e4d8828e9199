"""jepa_core: the library behind the `jepa` CLI (model, data, training, readers).

Nothing in this package imports Typer, Rich or Textual. Heavy modules (torch,
datasets) are imported by the submodules that need them, never here, so that
importing `jepa_core` stays cheap.
"""

__version__ = "0.1.0"
