"""Command groups shared by several modules (``train frames``, ``train text-image``...)."""

from __future__ import annotations

import typer
from skysearch.cli.app import app

train_app = typer.Typer(help="Train models (frame/clip encoders, predictor, text-image).")
eval_app = typer.Typer(help="Evaluate models against the ground truth, with baselines.")
index_app = typer.Typer(help="Embed catalogs and write the vectors into the store.")
search_app = typer.Typer(help="Search by clip, frame, image or free text.")
store_app = typer.Typer(help="Inspect and move the vector store.")
catalog_app = typer.Typer(help="Export the frame catalog for other tools (STAC).")

for _name, _group in [
    ("train", train_app),
    ("eval", eval_app),
    ("index", index_app),
    ("search", search_app),
    ("store", store_app),
    ("catalog", catalog_app),
]:
    app.add_typer(_group, name=_name, no_args_is_help=True)
