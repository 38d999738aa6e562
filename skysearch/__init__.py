"""SkySearch: search satellite imagery and satellite video at archive scale.

Subpackages: ``skysearch.ingest`` (archive -> frame store + Parquet catalogs, similarity
metric), ``skysearch.encoders`` (models, training), ``skysearch.retrieval`` (Qdrant store,
indexing, search, evaluation, HTTP service), ``skysearch.workflows`` (demo, update job,
doctor, repair), ``skysearch.cli`` (the ``skysearch`` command). This package itself is the
kernel: errors, configuration, time, atomic writes, CPU threads, and the HTTP client.
"""

__version__ = "0.1.0"
