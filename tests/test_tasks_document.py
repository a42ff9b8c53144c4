"""The document task (MediumDocEdit-Chat): BLEU of the extracted final document."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.prompting import Prompts
from collabgen.tasks.document import DocumentTask, bleu
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, by_turn, read_shards, recipe_from_file, write_recipe
from tests.scripts import ASSEMBLE_SECTIONS, JUDGE, article_sections, install_document, install_sectioned_document

# Hand-computed sacrebleu sentence BLEU (13a tokens, exp smoothing), title vs article:
# - "the cat sat on the mat" vs "the cat sat on the red mat": the hypothesis has 6 tokens,
#   the reference 7. Matching n-grams: 1-grams 6/6, 2-grams 4/5 (not "the mat"),
#   3-grams 3/4, 4-grams 2/3. Geometric mean (1 * 4/5 * 3/4 * 2/3) ** (1/4) = 0.4 ** 0.25
#   = 0.795271; brevity penalty exp(1 - 7/6) = 0.846482; BLEU = 0.673182.
CAT = 0.6731821382417488
# - "my garden in spring" vs "my garden in spring is full of tulips": every n-gram of the
#   4-token hypothesis matches (precisions 4/4, 3/3, 2/2, 1/1), so BLEU is the brevity
#   penalty alone: exp(1 - 8/4) = exp(-1) = 0.367879.
GARDEN = 0.36787944117144233
# - "Why I run" vs "running every morning keeps me calm": no unigram in common; sacrebleu
#   returns 0 when nothing matches (smoothing only applies once something does).
RUN = 0.0
TITLE_BLEU = {"document-000000": CAT, "document-000001": GARDEN, "document-000002": RUN}


def test_bleu_is_sacrebleu_sentence_bleu_on_a_zero_to_one_scale():
    assert bleu("the cat sat on the red mat", "the cat sat on the red mat") == 1.0
    assert bleu("the cat sat on the mat", "the cat sat on the red mat") == pytest.approx(CAT, abs=1e-9)
    assert bleu("my garden in spring", "my garden in spring is full of tulips") == pytest.approx(GARDEN, abs=1e-9)
    assert bleu("Why I run", "running every morning keeps me calm") == RUN
    assert bleu("   ", "anything") == 0.0


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        install_document(fake)
        yield fake


def test_mediumdoc_recipe_scores_each_candidate_by_the_bleu_of_its_futures(server, tmp_path):
    out = tmp_path / "out"
    recipe = recipe_from_file("mediumdoc", server.base_url, out, SEEDS / "document.jsonl")
    result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "doc.yaml", recipe))])
    assert result.exit_code == 0, result.output

    turns = by_turn(read_shards(out, "candidates"))
    for conv_id, title_bleu in TITLE_BLEU.items():
        first = turns[(conv_id, 0)]
        # Asked what to write, the user reveals the article and the next draft is exact.
        assert first[True]["metrics"]["bleu"] == 1.0
        assert all(f["metrics"]["bleu"] == 1.0 for f in first[True]["futures"])
        # Never asked, the policy keeps drafting the title.
        assert first[False]["metrics"]["bleu"] == pytest.approx(title_bleu, abs=1e-9)
        assert first[True]["chosen"]
        # Turn 1 starts from the revealed article: both candidates draft it exactly.
        assert {c["metrics"]["bleu"] for c in turns[(conv_id, 1)].values()} == {1.0}
        assert (conv_id, 2) not in turns  # the user ended the chat

    pairs = read_shards(out, "pairs")
    assert pairs.height == 3 and set(pairs["turn"]) == {0}
    assert set(pairs["metrics_chosen"].struct.field("bleu")) == {1.0}
    sft = read_shards(out, "sft")
    assert sft.height == 3
    # One extraction per distinct finished conversation: futures that read the same way
    # share one judge call (3 conversations x 2 candidates x 3 futures x 2 turns at most).
    extractions = [c for c in server.ok_calls(JUDGE) if '{"document"' in c.body["messages"][-1]["content"]]
    candidates = read_shards(out, "candidates")
    distinct = {
        repr([*row["prompt"], {"role": "assistant", "content": row["response"]}, *future["messages"]])
        for row in candidates.iter_rows(named=True) for future in row["futures"]
    }
    assert len(extractions) == len(distinct) <= 3 * 2 * 3 * 2
    card = (out / "README.md").read_text()
    assert "license: other" in card and "Chiusano" not in card and "`bleu`" in card


def test_an_article_over_the_budget_is_rejected_with_what_to_do(server, tmp_path):
    recipe = recipe_from_file(
        "mediumdoc", server.base_url, tmp_path / "out", SEEDS / "document.jsonl",
        **{"task.options.max_article_chars": 30},
    )
    result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "doc.yaml", recipe))])
    assert result.exit_code == 2
    assert "document.jsonl:2" in result.output  # the 37-character garden article
    assert "max_article_chars" in result.output and "filter" in result.output
    assert server.calls == []


def test_a_missing_column_names_the_mapping(tmp_path):
    task = DocumentTask()
    with pytest.raises(Exception, match="'body'.*task.source.fields"):
        task.seed_from_row({"title": "t", "content": "x"}, {"text": "body"}, "rows.jsonl:1")


def test_the_extraction_prompt_asks_for_the_whole_final_document():
    # "The latest full draft" made judges return only the last section of a document
    # written section by section.
    prompt = Prompts().render("tasks/document_extract", title="On tulips", conversation="USER: hi")
    assert "whole document" in prompt and ASSEMBLE_SECTIONS in prompt and "in the document's order" in prompt
    assert "not only the last section" in prompt and "latest full draft" not in prompt


def test_a_document_written_in_two_sections_is_scored_on_both(server, tmp_path):
    install_sectioned_document(server)  # replaces the fixture's scripts
    out = tmp_path / "out"
    recipe = recipe_from_file("mediumdoc", server.base_url, out, SEEDS / "document.jsonl")
    result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "doc.yaml", recipe))])
    assert result.exit_code == 0, result.output

    sft = read_shards(out, "sft")
    assert sft.height == 3
    for row in sft.iter_rows(named=True):
        sections = [m["content"] for m in row["messages"] if m["content"].startswith("SECTION ")]
        assert len(sections) == 2  # the conversation wrote the article in two messages
        assert row["final_metrics"]["bleu"] == 1.0  # scored on both, not on the second alone
    turns = by_turn(read_shards(out, "candidates"))
    for conv_id in TITLE_BLEU:
        # Asked what to write, the user reveals the article; the future writes both halves.
        assert all(f["metrics"]["bleu"] == 1.0 for f in turns[(conv_id, 0)][True]["futures"])
    extractions = [c.body["messages"][-1]["content"] for c in server.ok_calls(JUDGE)
                   if '{"document"' in c.body["messages"][-1]["content"]]
    assert extractions and all(ASSEMBLE_SECTIONS in prompt for prompt in extractions)
    articles = [json.loads(line)["text"] for line in (SEEDS / "document.jsonl").read_text().splitlines()]
    assert all(bleu(article_sections(a)[-1], a) < 1.0 for a in articles)  # the last section alone scores less
