"""ATP's JSON HTTP API: ``views`` (Flower's routes), ``auth`` (who may call what).

The URLs stay in ``atp.urls`` so that ``include("atp.urls")`` keeps working.
"""
