"""Re-scorers of a search's shortlist, one module each, registered by name (base.py holds the
contract). A new re-scorer is one module here plus its import below and its config keys."""
from pipeline.retrieval.postprocess.base import POSTPROCESSORS, SearchContext, build, register  # noqa: F401

# The re-scorers register themselves on import.
from pipeline.retrieval.postprocess import local, verify  # noqa: E402,F401
