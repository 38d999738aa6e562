"""SkySearch: search satellite imagery and satellite video at archive scale.

Subpackages: ``skysearch.ingest`` (archive -> frame store + Parquet catalogs, similarity
metric), ``skysearch.encoders`` (models, training), ``skysearch.retrieval`` (Qdrant store,
search), ``skysearch.cli`` (the ``skysearch`` command).
"""

__version__ = "0.1.0"
