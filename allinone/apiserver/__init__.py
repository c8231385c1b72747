"""apiserver: the HTTP API of DESIGN.md as Sanic blueprints (see :mod:`.routes`)."""
