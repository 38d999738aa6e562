"""One read -> embed -> write pipeline (``pipeline``) fed by the catalog readers (frames, clips:
``catalogs``) and the scene reader (``scenes``); embedding here or as engine tasks
(``distributed``, ``steps``), into the store or as Parquet part files (``parquet_parts``), as
``runner`` picks."""
