"""An evaluation's headline scores of the trained model, recorded in the model registry
(``models/registry.json``), so whoever picks a model there sees what it scored without
re-running anything. Keys: the metric's name (``ndcg_at_10``, ``recall_at_10``,
``pearson``; ``analogs_<setting>_<metric>`` for analogs), prefixed by the split when it is not
``test`` (``validation_ndcg_at_10``) and by the satellite when one was asked
(``goes-west_ndcg_at_10``), so scores of other splits and satellites sit side by side.
"""

from __future__ import annotations

from typing import Any

from skysearch.encoders.registry import update_metrics
from skysearch.retrieval.evaluation.analogs import METRICS, SETTINGS

from skysearch.config import Workspace

RANKING_METRICS = ("ndcg_at_10", "recall_at_10", "pearson")


def trained_scores(result: dict[str, Any]) -> dict[str, Any]:
    """The trained model's headline scores of an ``evaluate_clips``/``evaluate_frames`` or an
    ``evaluate_analogs`` result (a setting with no best track records nothing)."""
    if "ndcg_at_10" in result:
        return {m: result[m]["trained"] for m in RANKING_METRICS}
    return {
        f"analogs_{setting}_{m}": result[setting][m]["trained"]
        for setting in SETTINGS
        if "n/a" not in result[setting]
        for m in METRICS
    }


def record_scores(
    workspace: Workspace, result: dict[str, Any], split: str, satellite: str | None
) -> dict[str, Any]:
    """Merge the result's headline scores into its model's registry entry; what was written."""
    prefix = "" if split == "test" else f"{split}_"
    if satellite:
        prefix += f"{satellite}_"
    scores = {f"{prefix}{name}": value for name, value in trained_scores(result).items()}
    update_metrics(workspace, result["model_id"], scores)
    return scores
