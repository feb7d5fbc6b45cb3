"""Retrieval for grounded dialogue: passages, Korean-aware BM25, dense bi-encoder, fusion, reranking, RAG.

    from groundtune.retrieval import load_passages, build_index, Retriever
    build_index(load_passages("docs.json", "structure"), "my-index")
    hits = Retriever.load("my-index").search("how do I renew my license?[SEP]", k=5)
"""

from __future__ import annotations

from groundtune._lazy import lazy_getattr

# Public names -> module that defines them. Lazy so that importing the package never loads torch or faiss.
_EXPORTS = {
    "Passage": "groundtune.retrieval.passages",
    "token_passages": "groundtune.retrieval.passages",
    "structure_passages": "groundtune.retrieval.passages",
    "document_passages": "groundtune.retrieval.passages",
    "text_passages": "groundtune.retrieval.passages",
    "markdown_passages": "groundtune.retrieval.passages",
    "load_passages": "groundtune.retrieval.passages",
    "IngestReport": "groundtune.retrieval.passages",
    "synthesize": "groundtune.retrieval.synth",
    "Tokenizer": "groundtune.retrieval.tokenizer",
    "BM25Index": "groundtune.retrieval.bm25",
    "DenseIndex": "groundtune.retrieval.dense",
    "reciprocal_rank_fusion": "groundtune.retrieval.hybrid",
    "build_index": "groundtune.retrieval.index",
    "Retriever": "groundtune.retrieval.index",
    "Hit": "groundtune.retrieval.index",
    "RetrievalQuery": "groundtune.retrieval.queries",
    "build_query": "groundtune.retrieval.queries",
    "queries_from_dialogues": "groundtune.retrieval.queries",
    "load_rc_queries": "groundtune.retrieval.queries",
    "load_queries": "groundtune.retrieval.queries",
    "evaluate_retriever": "groundtune.retrieval.evaluate",
    "evaluate_rankings": "groundtune.retrieval.evaluate",
    "format_table": "groundtune.retrieval.evaluate",
    "Reranker": "groundtune.retrieval.reranker",
    "load_reranker": "groundtune.retrieval.rerank",
    "CrossEncoderReranker": "groundtune.retrieval.rerank",
    "LateInteractionReranker": "groundtune.retrieval.late_interaction",
    "mine_examples": "groundtune.retrieval.rerank",
    "train_reranker": "groundtune.retrieval.rerank",
    "rag_samples": "groundtune.retrieval.rag",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
