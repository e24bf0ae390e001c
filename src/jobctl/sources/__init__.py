"""Feed sources for ``jobctl sync``: HTTP download (:mod:`.http`) and parsing (:mod:`.parse`).

Only :mod:`jobctl.sources.http` imports httpx; import it lazily where HTTP is needed.
"""
