"""Pictures of fits and kept models (``GET /v1/jobs/{id}/plot``, ``GET /v1/models/{id}/plot``).

Drawn with matplotlib's Agg backend in the fit worker processes, never on the event loop. matplotlib is
imported lazily (inside functions), so importing a family's registration costs a worker nothing until it
draws; ``service/em/`` never imports any of this.
"""
