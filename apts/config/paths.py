"""Where the Hydra configs are: a leaf (pathlib only), so that any layer can read them.

configs/ sits beside the package in a source checkout (editable install) and inside it
as apts/configs in a wheel."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parents[1]  # the apts package
CONFIG_DIR = next(
    (p for p in (_HERE.parent / "configs", _HERE / "configs") if (p / "train.yaml").is_file()),
    _HERE / "configs",
)
