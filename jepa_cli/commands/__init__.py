"""One module per command group; each imports heavy libraries only inside its commands."""

from typing import Annotated

import typer

#: The checkpoint argument of the commands that read one trained model (`sample`, `export`).
CheckpointArg = Annotated[
    str,
    typer.Argument(
        metavar="RUN_OR_CHECKPOINT",
        help="A run directory (its latest checkpoint), its checkpoints/ folder, a step-*.safetensors file, or RUN:best.",
        show_default=False,
    ),
]
