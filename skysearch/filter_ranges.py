"""The inclusive ranges the search filters' numbers must fall in.

The library's check (``retrieval.store.filters``) and the HTTP schema
(``retrieval.service.wire``, which the light client imports) read them here.
"""

MONTHS, HOURS, DAYS_OF_YEAR = (1, 12), (0, 23), (1, 366)
JMA_CLASSES = (2, 6)  # tropical depression .. extratropical: the classes with a storm
PRESSURE_HPA = (800, 1100)
