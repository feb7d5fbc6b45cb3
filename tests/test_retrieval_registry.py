"""A retrieval stage is one module that registers itself: a toy reranker defined here, with no line anywhere
else in groundtune, is accepted by the config check, runs in a retriever's pipelines and in RAG from an index
config, as the real ones do (tests/test_registry.py does the same for a PEFT method)."""

import pytest

from groundtune.config import DataConfig
from groundtune.data import asset_path
from groundtune.errors import ConfigError
from groundtune.retrieval import Passage, Retriever, build_index
from groundtune.retrieval.pipelines import (FirstStage, RerankerStage, check_retrieval, first_stages,
                                            register_first_stage, register_reranker, rerankers)
from groundtune.retrieval.reranker import Reranker


class ShortestFirst(Reranker):
    """Re-orders the candidates shortest passage first (a reranker whose effect a test can predict)."""

    kind = "toy_shortest"

    def score(self, pairs):
        return [-float(len(passage)) for _, passage in pairs]


register_reranker(RerankerStage("toy_shortest", load=lambda source=None, **options: ShortestFirst(),
                                needs_folder=False, languages=None))

PASSAGES = [Passage("a", "renew your licence online at the office of motor vehicles today"),
            Passage("b", "renew licence"), Passage("c", "pay a parking ticket"),
            Passage("d", "to renew a licence, bring the old licence and a photo")]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return build_index(PASSAGES, tmp_path_factory.mktemp("toy") / "idx", dense=False, show_progress=False)


def test_the_registry_knows_the_real_stages_and_the_toy():
    assert {"bm25", "dense", "hybrid"} <= set(first_stages())
    assert {"late-interaction", "cross-encoder", "upr", "toy_shortest"} <= set(rerankers())
    assert first_stages()["hybrid"].combines == ("bm25", "dense")


def test_the_toy_reranker_runs_in_a_retrievers_pipelines(index):
    retriever = Retriever.load(index)
    ranked = retriever.rank_pipelines(["renew licence[SEP]"], 3, ["bm25", "bm25+toy_shortest"], rerank_depth=3)
    plain, toy = ranked["bm25"][0], ranked["bm25+toy_shortest"][0]
    assert {i for i, _ in toy} == {i for i, _ in plain}  # the same candidates, re-ordered
    assert [len(PASSAGES[i].text) for i, _ in toy] == sorted(len(PASSAGES[i].text) for i, _ in plain)
    assert toy != plain  # BM25 puts the passage that says "renew licence" most often first, not the shortest
    with pytest.raises(ValueError, match="toy_shortest"):  # a misspelt name is refused, naming what there is
        retriever.rank_pipelines(["renew"], 3, ["bm25+toy_shortset"])


def test_the_toy_reranker_is_used_from_an_index_config(index):
    """data.retrieval names the toy in its pipeline; RAG samples then carry the passages in its order."""
    from groundtune.tasks.grounded import load_eval_samples

    from groundtune.data import load_documents
    from groundtune.retrieval import document_passages

    docs = asset_path("doc2dial/doc2dial_doc.json")
    folder = build_index(document_passages(load_documents(docs), "structure"), index.parent / "doc2dial",
                         dense=False, show_progress=False)

    def passages(pipeline):
        data = DataConfig(format="doc2dial", eval=str(asset_path("doc2dial/doc2dial_dial_validation.json")),
                          documents=str(docs), max_eval_samples=6,
                          retrieval={"index": str(folder), "k": 2, "rerank_depth": 5, "pipeline": pipeline})
        return [s.meta["passage_texts"] for s in load_eval_samples(data, None, verbose=False)]

    plain, toy = passages("bm25"), passages("bm25+toy_shortest")
    assert len(toy) == len(plain) == 6
    assert all(len(first) <= len(second) for first, second in toy)
    assert toy != plain
    with pytest.raises(ConfigError, match=r"toy_shortest"):
        check_retrieval({"index": "idx", "pipeline": "bm25+toy_shortset"})


def test_language_coverage_is_declared_on_each_stage():
    english_encoder = {"encoder_languages": ["en"], "fusion": {"dense_weight": 0.5}}
    assert first_stages()["bm25"].languages(english_encoder) == ["en", "ko"]
    assert first_stages()["dense"].languages(english_encoder) == ["en"]
    assert first_stages()["hybrid"].languages(english_encoder) == ["en"]
    # an encoder the fusion gives no weight (an English one on a Korean corpus) leaves BM25's coverage
    assert first_stages()["hybrid"].languages({**english_encoder, "fusion": {"dense_weight": 0.0}}) == ["en", "ko"]
    assert rerankers()["late-interaction"].languages == ("en",) and rerankers()["upr"].languages is None


def test_a_stage_name_cannot_be_taken_twice_or_be_a_pipeline_word():
    for name in ("bm25", "default", "rerank", "a+b", "toy_shortest"):
        with pytest.raises(ValueError, match="name"):
            register_first_stage(FirstStage(name, rank=lambda retriever, queries, depth, inputs: []))
