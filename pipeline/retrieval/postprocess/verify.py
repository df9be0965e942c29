"""The verification head as a re-scorer: P(right whale) from a small MLP trained once per gallery on
leave-one-out pairs (retrieval/verification.py)."""
from __future__ import annotations

from pipeline.errors import PipelineError
from pipeline.retrieval.postprocess.base import SearchContext, register
from pipeline.retrieval.result import RetrievalResult


@register("verify")
class Verify:
    def __init__(self, cfg: dict, seed: int, descriptors=None):
        self.cfg, self.seed = cfg, seed
        if cfg["aggregation"] != "max":
            raise PipelineError("the verification head re-scores photo neighbours: use aggregation max", "knn.verify")
        self.heads: dict = {}  # gallery -> its head

    def process(self, result: RetrievalResult, ctx: SearchContext) -> RetrievalResult:
        from pipeline.retrieval.verification import fit_head, rescore

        gallery = ctx.gallery
        if gallery not in self.heads:
            self.heads[gallery] = fit_head(ctx.vectors, gallery.ids, gallery.negatives, self.cfg, ctx.options["index"],
                                           self.seed)
        return result.rescored(rescore(self.heads[gallery], ctx.queries, ctx.names, ctx.vectors, gallery.ids,
                                       ctx.sims, ctx.idx, result.scores, self.cfg))
