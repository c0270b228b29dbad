"""The report, its figures and the README block: structure, links, and numbers that come from results.json."""

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_data import TRUSTED_RATIO, UNTRUSTED_RATIO, synthetic_study

from study.report import readme as readme_module
from study.report.answer import fmt, percent
from study.report.claims import claim_markdown, claims, glossary_markdown, link_terms, plain, words
from study.report.document import inline_html, to_markdown
from study.report.write import results_document, write_all
from study.report.build import build
from study.report.topics.overview import model_anchor
from study.report.summary import MAX_R_HAT, MIN_ESS_BULK, study_answer

ROOT = Path(__file__).resolve().parents[1]
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """``(folder, renamed)``: the synthetic study written by the real output path (CSV, JSON,
    ArviZ, figures, report), and every path ``os.replace`` renamed a file onto meanwhile."""
    out = tmp_path_factory.mktemp("report")
    renamed = []
    real_replace = os.replace

    def recording_replace(source, target, *args, **kwargs):
        real_replace(source, target, *args, **kwargs)
        renamed.append(Path(target).resolve())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", recording_replace)
        write_all(synthetic_study(), out)
    return out, renamed


@pytest.fixture(scope="module")
def out(written):
    return written[0]


@pytest.fixture(scope="module")
def results(out):
    return json.loads((out / "results.json").read_text())


class Page(HTMLParser):
    """Records tags, checks that every non-void element closes in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags = [], [], []
        self.ids, self.imgs, self.hrefs, self.text = set(), [], [], []
        self._in_p = 0
        self.paragraphs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            if attrs["id"] in self.ids:
                self.errors.append(f"duplicate id {attrs['id']}")
            self.ids.add(attrs["id"])
        if tag == "img":
            self.imgs.append(attrs)
        if tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "p":
            self._in_p += 1
            self.paragraphs.append("")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag == "p":
            self._in_p -= 1

    def handle_data(self, data):
        if self._in_p:
            self.paragraphs[-1] += data


@pytest.fixture(scope="module")
def page(out):
    parser = Page()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_html_is_well_formed_and_self_contained(out, page):
    html = (out / "report.html").read_text(encoding="utf-8")
    assert page.errors == [] and page.stack == []
    assert '<meta name="viewport"' in html
    assert "<script" not in html and "<link" not in html  # no scripts, no external stylesheet
    assert page.imgs and all(img["src"].startswith("data:image/png;base64,") for img in page.imgs)
    assert all(img.get("alt") for img in page.imgs)
    # Every in-page link has a target; nothing points off the page.
    assert all(h.startswith("#") and h[1:] in page.ids for h in page.hrefs)
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html


def test_every_model_has_a_section_tables_and_figures(out, page, results):
    html = (out / "report.html").read_text(encoding="utf-8")
    for name in results["models"]:
        assert model_anchor(name) in page.ids, name
        assert f'id="{model_anchor(name)}-section"' in html
    # Real tables: the answer table, per fitted model the σ table and one az.summary per method with draws.
    assert page.tags.count("table") >= 1 + 2 * (1 + 5)
    section = html.split(f'id="{model_anchor("nuts_bad")}-section"')[1].split("</section>")[0]
    sigma_table = section.split("<table>")[1]
    assert sigma_table.count("<tr>") == 1 + 20  # header + one row per parameter
    # Three figures per fitted model, the claims', one across models, the shortfall law's; the failed model gets
    # its reason.
    assert len(page.imgs) == 3 * 2 + 1 + 1 + 1
    assert "ValueError: data() raised" in html
    assert "laplace_torch_full` failed" in (out / "report.md").read_text() or "laplace_torch_full</code> failed" in html


def test_markdown_images_are_relative_and_exist(out):
    markdown = (out / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == 3 * 2 + 1 + 1 + 1  # per model, the claims', across models, the shortfall law
    for link in links:
        assert not link.startswith(("/", "http")) and ".." not in link, link
        assert (out / link).is_file() and (out / link).stat().st_size > 1000, link
    # Every figure file is linked; the one other file is the figure cache's manifest.
    assert sorted(p.name for p in (out / "figures").iterdir() if p.name != ".figure-cache.json") == sorted(
        Path(link).name for link in links)
    assert isinstance(json.loads((out / "figures" / ".figure-cache.json").read_text()), dict)


def test_every_output_is_written_atomically(written):
    # Each file must appear by a rename from a temporary name (README: "Every file is written
    # to a temporary name and renamed into place"); a plain savefig or write_text would not.
    out, renamed = written
    files = sorted(p.resolve() for p in out.rglob("*") if p.is_file())
    assert {p.suffix for p in files} >= {".csv", ".json", ".md", ".html", ".nc", ".png"}
    assert [p for p in files if p not in renamed] == []
    assert len(renamed) == len(set(renamed)) == len(files)  # each written once, no temporaries left


def _rendered(markdown: str) -> str:
    import html as html_module

    return html_module.unescape(re.sub(r"<[^>]+>", "", inline_html(markdown)))


def test_claims_are_a_function_of_results_json(results, out):
    """The page's numbered claims are exactly those that results.json's numbers give, each linked to its section."""
    made = claims(results["answer"])
    assert [c.key for c in made] == ["proxy", "law", "collapse"]  # the synthetic study has no fixed-point check
    html = (out / "report.html").read_text(encoding="utf-8")
    listed = re.search(r'<ol class="claims" id="answer">(.*?)</ol>', html).group(1)
    assert listed == "".join(f"<li>{inline_html(claim_markdown(c))}</li>" for c in made)


def test_a_literal_asterisk_inside_an_italic_note_stays_an_asterisk(page, out):
    """A caption is italic in Markdown and names the * marker: the marker must not end the emphasis."""
    assert inline_html("*a \\* b*") == "<em>a &#42; b</em>"
    assert inline_html("0.99 ± 8.0e-04*") == "0.99 ± 8.0e-04*"
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "propagated from each ratio's σ_SVI seed-to-seed error; \\* the expected-loss run's own noise" in markdown
    assert any(p.endswith("* the expected-loss run's own noise is left out.") for p in page.paragraphs)


def test_report_opens_with_the_question_the_claims_and_the_figure(results, page, out):
    """First the question (the title), then the numbered claims, then one figure, then the contents."""
    markdown = (out / "report.md").read_text(encoding="utf-8")
    order = [markdown.index("# Is the mean-field σ a proxy for the Hessian diagonal?"), markdown.index("\n1. "),
             markdown.index("](figures/answer.png)"), markdown.index("## Contents"), markdown.index("## Glossary"),
             markdown.index("## Model index"), markdown.index("### The answer over the benchmark"),
             markdown.index("## Gaussian, correlated")]
    assert order == sorted(order)
    first_image = markdown[markdown.index("![", markdown.index("\n1. ")):]
    assert first_image.split(")")[0].endswith("(figures/answer.png")  # the figure follows the claims
    for claim in claims(results["answer"]):
        assert words(claim.text) <= 35, plain(claim.text)
        assert len(re.findall(r"\*\*", claim.text)) == 2  # one headline number
        assert claim.text.count(".") - len(re.findall(r"\d\.\d", claim.text)) == 1  # one sentence
        assert claim.anchor in page.ids  # the section that proves it
        for target in re.findall(r"\]\(#([^)]+)\)", link_terms(claim.text)):
            assert target in page.ids  # every term is defined in the glossary
    # The contents list every anchored section of the answer.
    contents = markdown[markdown.index("## Contents"):markdown.index("## The question")]
    for anchor in ("question", "glossary", "model-index", "benchmark", "collapse", "law"):
        assert f"](#{anchor})" in contents
    assert "benchmark" in page.ids


def _numbers(text: str) -> list[str]:
    return re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]\d+)?%?", text)


def _printed_values(value, out: set[str]) -> set[str]:
    """Every way the report prints a number of results.json's answer."""
    if isinstance(value, dict):
        for v in value.values():
            _printed_values(v, out)
    elif isinstance(value, list):
        for v in value:
            _printed_values(v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.update({fmt(value), fmt(value, 2), str(value), f"{value:.3g}", f"{value:,}"})
        if 0 <= value <= 1:
            out.add(percent(value))
    return out


def claim_numbers_match(answer: dict) -> None:
    """Each claim's headline number is results.json's, at the path the claim names; every other number in it
    is one of results.json's or a threshold of the study."""
    from study.checks.fixed_point import Z_LIMIT

    expected = {
        "proxy": answer["headline"].get("proxy"),
        "law": (answer.get("law") or {}).get("pooled"),
        "collapse": answer["headline"].get("collapse"),
    }
    # A fit flagged for a σ still moving at the step cap has not settled, whatever its residuals.
    verdicts = [a["fixed_point"]["verdict"] if not a["fixed_point"].get("flagged") else "not converged"
                for a in answer["models"].values() if a.get("fixed_point")]
    allowed = _printed_values(answer, set()) | {f"{Z_LIMIT:g}"}
    allowed |= {str(len(verdicts)), str(sum(v != "not converged" for v in verdicts)),
                str(sum(v == "fixed point" for v in verdicts)), str(sum(v == "not converged" for v in verdicts))}
    for claim in claims(answer):
        bold = re.search(r"\*\*([^*]+)\*\*", claim.text).group(1)
        if claim.key == "fixed_point":
            held = sum(v == "fixed point" for v in verdicts)
            assert bold == f"{held} of {sum(v != 'not converged' for v in verdicts)}" and claim.value == held
        else:
            entry = expected[claim.key]
            assert claim.value == entry["median"] and claim.se == entry.get("median_se")
            assert bold == fmt(entry["median"]) + ("" if entry.get("median_se") is None
                                                    else f" ± {fmt(entry['median_se'], 2)}")
        text = plain(claim.text).replace("σᵢ⁻²", "").replace("H⁻¹", "").replace("(1 − Rᵢ²)", "")
        text = re.sub(r"\([A-Z][a-z]+ (&|et al\.) [A-Z]?[a-z]* ?\d{4}\)", "", text).replace("1/√Hᵢᵢ", "")
        numbers = [n for n in _numbers(text) if n not in allowed]
        assert numbers == [], (numbers, text)


def test_the_claims_numbers_equal_results_json(results):
    claim_numbers_match(results["answer"])


def test_the_claims_of_a_real_run_equal_its_results_json():
    """With ``STUDY_REPORT_DIR`` (a run's output folder): its claims' numbers are its results.json's, and its
    report.html lists exactly those claims."""
    given = os.environ.get("STUDY_REPORT_DIR")
    if not given:
        pytest.skip("set STUDY_REPORT_DIR to a run's output folder to check its claims")
    results = json.loads((Path(given) / "results.json").read_text(encoding="utf-8"))
    claim_numbers_match(results["answer"])
    html = (Path(given) / "report.html").read_text(encoding="utf-8")
    for claim in claims(results["answer"]):
        assert f"<li>{inline_html(claim_markdown(claim))}</li>" in html
        assert words(claim.text) <= 35, plain(claim.text)
    assert_no_sentence_names_more_than_three_models(html, results)


def assert_no_sentence_names_more_than_three_models(html: str, results: dict) -> None:
    """Lists of models are tables: no sentence of a paragraph or list item names more than three."""
    parser = Page()
    parser.feed(html)
    names = set(results["models"]) | {m["title"] for m in results["models"].values()}
    items = re.findall(r"<li>(.*?)</li>", html, flags=re.S)
    texts = parser.paragraphs + [re.sub(r"<[^>]+>", "", i) for i in items]
    for text in texts:
        for sentence in re.split(r"(?<=[.;:])\s+(?=[A-Z])", text):
            named = {n for n in names if re.search(r"(?<![\w-])" + re.escape(n) + r"(?![\w-])", sentence)}
            # A title that contains a model name counts once.
            named = {n for n in named if not any(n != m and n in m for m in named)}
            assert len(named) <= 3, (sorted(named), sentence[:300])


def test_untrusted_reference_is_marked_and_left_out_of_pooled_numbers(out, results, page):
    pooled = results["answer"]["pooled"]
    assert pooled["untrusted_references"] == ["nuts_bad"]
    untrusted = results["answer"]["models"]["nuts_bad"]["reference_untrusted"]
    assert untrusted["max_r_hat"] == 1.3 and untrusted["min_ess_bulk"] == 40.0
    assert str(MAX_R_HAT) in untrusted["reason"] and str(MIN_ESS_BULK) in untrusted["reason"]
    # Pooled against the reference: only the trusted model's 3 parameters, each at TRUSTED_RATIO.
    ref = pooled["svi_over_reference"]
    assert ref["n"] == 3 and ref["median"] == pytest.approx(TRUSTED_RATIO, rel=1e-12)
    assert ref["min"] > UNTRUSTED_RATIO * 1.5
    # Comparisons without the reference still pool every model (3 + 20 parameters).
    assert pooled["svi_over_laplace_diag"]["n"] == 23
    # The claims speak of the trusted model alone; the model index marks the other.
    proxy = next(c for c in claims(results["answer"]) if c.key == "proxy")
    assert "over 3 parameters of 1 model with a" in proxy.text
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "NUTS (untrusted †)" in html and "Untrusted reference" in html
    assert "sd reference †" in html


def test_nuts_reference_within_limits_is_trusted():
    study = synthetic_study()
    study.models[1].fits["reference"].info.update(max_r_hat=1.01, min_ess_bulk=400.0)
    answer = study_answer(study)
    assert "untrusted_references" not in answer["pooled"]
    assert answer["pooled"]["svi_over_reference"]["n"] == 23


def test_wording_follows_the_numbers():
    """Claims are chosen by thresholds: no "σᵢ ≈ 1/√Hᵢᵢ" when the ratios say otherwise."""
    study = synthetic_study()
    for model in study.models[:2]:  # σ_SVI three times 1/√Hᵢᵢ in every model
        model.fits["svi_meanfield"].sd = 3.0 * model.fits["laplace_diag"].sd
    proxy = next(c for c in claims(study_answer(study)) if c.key == "proxy")
    assert proxy.text.startswith("σᵢ is not close to 1/√Hᵢᵢ") and proxy.value == pytest.approx(3.0)

    study = synthetic_study()
    for model in study.models[:2]:  # now σ_SVI = 1/√Hᵢᵢ everywhere
        model.fits["svi_meanfield"].sd = model.fits["laplace_diag"].sd.copy()
    made = {c.key: c for c in claims(study_answer(study))}
    assert made["proxy"].text.startswith("Where the posterior is near-Gaussian σᵢ ≈ 1/√Hᵢᵢ")

    study = synthetic_study()
    model = study.models[0]  # σ_SVI at the reference sd: the law's prediction (√(1 − Rᵢ²) = 0.5) missed by 2
    model.fits["svi_meanfield"].sd = model.fits["reference"].sd.copy()
    law = next(c for c in claims(study_answer(study)) if c.key == "law")
    assert "misses the [shortfall law]" in law.text and law.value == pytest.approx(2.0)


def test_report_takes_extra_blocks():
    from study.report.document import Paragraph, to_markdown

    study = synthetic_study()
    answer = study_answer(study)
    blocks, _ = build(study, answer, extra_answer_blocks=[lambda s, a: [Paragraph("EXTRA-ANSWER")]],
                      extra_model_blocks=[lambda m, a: [Paragraph(f"EXTRA-{m.name}")]])
    text = to_markdown(blocks, ROOT)
    assert text.index("EXTRA-ANSWER") < text.index("## Gaussian, correlated")
    assert "EXTRA-gauss_ok" in text and "EXTRA-nuts_bad" in text


# -- the README block ----------------------------------------------------------------------------


def test_readme_block_is_regenerated_from_results_json(out, results, tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    before = readme.read_text()
    result = readme_module.update(out / "results.json", readme, tmp_path / "docs")
    text = readme.read_text()
    # The answer recomputed from results.json's sds is the one results.json stores.
    assert json.loads(json.dumps(result["answer"])) == results["answer"]
    block = text[text.index(readme_module.START):text.index(readme_module.END)]
    # The block holds the numbered claims (terms linked to the glossary) and the figure, nothing else.
    made = claims(results["answer"])
    lines = [line for line in block.splitlines()[1:] if line.strip()]
    assert lines[:len(made)] == [f"{k}. {claim_markdown(c, 'docs/glossary.md', section_link=False)}"
                                 for k, c in enumerate(made, 1)]
    assert lines[len(made)].startswith("![") and lines[len(made)].endswith("(docs/answer.png)")
    assert lines[len(made) + 1].startswith("*") and len(lines) == len(made) + 2
    assert (tmp_path / "docs" / "answer.png").stat().st_size > 1000
    assert (tmp_path / "docs" / "glossary.md").read_text(encoding="utf-8") == glossary_markdown()
    assert str(tmp_path) not in text and "/tmp/" not in block
    # Only the block changed.
    head, tail = before.split(readme_module.START)[0], before.split(readme_module.END)[1]
    assert text.startswith(head) and text.endswith(tail)
    # Running it again changes nothing.
    readme_module.update(out / "results.json", readme, tmp_path / "docs")
    assert readme.read_text() == text


def test_readme_refuses_quick_runs_and_missing_markers(tmp_path, capsys):
    out = tmp_path / "quick"
    study = synthetic_study(quick=True)
    out.mkdir()
    (out / "results.json").write_text(json.dumps(results_document(study, study_answer(study))))
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    assert readme_module.main(["--results", str(out / "results.json"), "--readme", str(readme),
                               "--docs", str(tmp_path / "docs")]) == 2
    assert "--quick run" in capsys.readouterr().err
    readme.write_text("# no markers\n")
    assert readme_module.main(["--results", str(out / "results.json"), "--readme", str(readme),
                               "--docs", str(tmp_path / "docs"), "--allow-quick"]) == 2
    assert "no answer block" in capsys.readouterr().err
    assert readme_module.main(["--results", str(tmp_path / "nope.json"), "--readme", str(readme)]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "docs").exists()


def test_committed_readme_block_is_generated_and_its_links_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(readme_module.START):text.index(readme_module.END)]
    links = re.findall(r"!\[[^\]]*\]\(([^)#]+)\)", block)
    assert links and all((ROOT / link).is_file() for link in links)
    targets = {link.split("#")[0] for link in re.findall(r"\]\(([^)]+)\)", block)}
    assert targets and all((ROOT / t).is_file() for t in targets)
    assert not re.search(r"(/tmp/|/home/|/root/|/work/|[A-Z]:\\)", text)
    claimed = [line for line in block.splitlines() if re.match(r"\d\. ", line)]
    assert 3 <= len(claimed) <= 4
    for line in claimed:
        assert words(line[3:]) <= 35 and len(re.findall(r"\*\*", line)) == 2
    # The glossary the claims link to is the one the code defines.
    assert (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8") == glossary_markdown()


def test_the_readme_is_short_and_every_command_writes_to_its_own_folder():
    """At most 250 lines; every study command that names a model file or model names --out (not reports/)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    commands = [line for line in text.splitlines() if "study.compare" in line and ("--model" in line)]
    assert commands and all("--out" in line for line in commands), commands
    for page in ("methods", "models", "speed", "layout", "glossary"):
        assert f"docs/{page}.md" in text and (ROOT / "docs" / f"{page}.md").is_file()


def test_report_with_a_subset_of_methods(tmp_path):
    """Only some methods ran: the figures that need the others are left out, the answer says what it can."""
    study = synthetic_study()
    for model in study.models:
        model.fits = {k: v for k, v in model.fits.items() if k in ("svi_meanfield", "reference")}
    study.methods = ["svi_meanfield", "reference"]
    write_all(study, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "figures/sigma-curvature-gauss-ok.png" in markdown and "collapse-gauss-ok" not in markdown
    made = [c.key for c in claims(study_answer(study))]
    assert "proxy" not in made and "collapse" not in made and made == ["law"]


def test_committed_readme_block_equals_make_readme_from_a_real_run(tmp_path):
    """With ``STUDY_REPORT_DIR=reports`` (a default run at this commit), the committed block is exactly
    what ``make readme`` writes from that run's results.json."""
    import os

    given = os.environ.get("STUDY_REPORT_DIR")
    if not given:
        pytest.skip("set STUDY_REPORT_DIR to a default run's output folder to check the committed block")
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    readme_module.update(Path(given) / "results.json", readme, tmp_path / "docs")
    # The figure and glossary links are docs/answer.png and docs/glossary.md relative to the README in both.
    assert readme.read_text(encoding="utf-8") == (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_claims_numbers_all_come_from_results_json(out, results, tmp_path):
    """Every number of the README block's claims is one of results.json's answer, as the report prints it."""
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    readme_module.update(out / "results.json", readme, tmp_path / "docs")
    text = readme.read_text()
    block = text[text.index(readme_module.START):text.index(readme_module.END)]
    claim_numbers_match(results["answer"])
    for claim in claims(results["answer"]):
        assert link_terms(claim.text, "docs/glossary.md") in block


def test_a_warm_run_reads_unchanged_figures_back_and_redraws_changed_ones(tmp_path):
    # make_all keys each (figure function, model) by everything the function sees: an
    # unchanged model's figures are read back from the manifest, a changed fit, a missing
    # file or changed report code draw again.
    from study.report.build import make_all
    from study.report import figure_cache
    from study.report.document import Image

    study = synthetic_study()
    answer = study_answer(study)
    calls = []

    def figure(model, a, fig_dir):
        calls.append(model.name)
        path = Path(fig_dir) / f"{model.name}-test.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        return Image(path, f"alt {model.name}", "caption")

    drawn = [m.name for m in study.models if m.status == "ok"]
    first, _ = make_all(study, answer, tmp_path, model_figures=[figure], answer_figures=[])
    assert calls == drawn
    calls.clear()
    second, _ = make_all(study, answer, tmp_path, model_figures=[figure], answer_figures=[])
    assert calls == [] and second == first
    # A fit read back from the cache (info["cache"]) changes no figure.
    for model in study.models:
        for fit in model.fits.values():
            fit.info = {**(fit.info or {}), "cache": "reused"}
    make_all(study, answer, tmp_path, model_figures=[figure], answer_figures=[])
    assert calls == []
    # A changed sd draws that model's figure again; a deleted file too.
    changed = next(m for m in study.models if m.status == "ok")
    fit = next(iter(changed.fits.values()))
    fit.sd = fit.sd * 1.01
    make_all(study, answer, tmp_path, model_figures=[figure], answer_figures=[])
    assert calls == [changed.name]
    calls.clear()
    (tmp_path / f"{drawn[-1]}-test.png").unlink()
    make_all(study, answer, tmp_path, model_figures=[figure], answer_figures=[])
    assert calls == [drawn[-1]]
    calls.clear()
    # Other report code: every figure again.
    original = figure_cache.report_code_hash
    figure_cache.report_code_hash = lambda: "other"
    try:
        make_all(study, answer, tmp_path, model_figures=[figure], answer_figures=[])
    finally:
        figure_cache.report_code_hash = original
    assert calls == drawn
    # A manifest that points outside the folder is never followed.
    manifest = tmp_path / figure_cache.MANIFEST
    stored = json.loads(manifest.read_text())
    for entries in stored.values():
        for entry in entries:
            entry["path"] = "../outside.png"
    manifest.write_text(json.dumps(stored))
    calls.clear()
    make_all(study, answer, tmp_path, model_figures=[figure], answer_figures=[])
    assert calls == drawn


def test_a_warm_write_reads_unchanged_analysis_blocks_and_idata_back(tmp_path, monkeypatch):
    # write_all a second time on the same results: the analysis blocks (text, tables and
    # figures together) come from the manifest, the ArviZ files are left alone, and the
    # report is the same bytes. A changed fit draws its model's blocks and writes its file again.
    from study.report import build as build_module

    study = synthetic_study()
    write_all(study, tmp_path)
    first_md = (tmp_path / "report.md").read_text()
    idata = sorted((tmp_path / "idata").rglob("*.nc"))
    assert idata
    stamps = {p: p.stat().st_mtime_ns for p in idata}

    calls = []
    original_model, original_answer = build_module.fixed_point_blocks, build_module.networks_answer
    monkeypatch.setattr(build_module, "fixed_point_blocks",
                        lambda model, fig_dir: calls.append(model.name) or original_model(model, fig_dir))
    monkeypatch.setattr(build_module, "networks_answer",
                        lambda s, a, fig_dir: calls.append("answer") or original_answer(s, a, fig_dir))
    write_all(study, tmp_path)
    assert calls == []
    assert (tmp_path / "report.md").read_text() == first_md
    assert {p: p.stat().st_mtime_ns for p in idata} == stamps

    changed = next(m for m in study.models if m.status == "ok" and any(f.ok and f.draws is not None
                                                                         for f in m.fits.values()))
    fit = next(f for f in changed.fits.values() if f.ok and f.draws is not None)
    fit.draws = fit.draws * 1.01
    write_all(study, tmp_path)
    assert sorted(calls) == sorted([changed.name, "answer"])
    rewritten = [p for p in idata if p.stat().st_mtime_ns != stamps[p]]
    assert rewritten == [tmp_path / "idata" / changed.name / f"{fit.method}.nc"]
    # A deleted file is written again.
    idata[0].unlink()
    write_all(study, tmp_path)
    assert idata[0].is_file()


def test_the_block_cache_round_trips_every_block_type(tmp_path):
    from study.report.document import Bullets, Code, Details, Heading, Image, Paragraph, Section, Table
    from study.report.figure_cache import FigureCache

    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    blocks = [Heading(3, "h", anchor="x"), Paragraph("p"), Bullets(["a", "b"]), Code("c"),
              Table(columns=["a", "b"], rows=[["1", "2"]], caption="t", numeric=False),
              Details("d", [Image(image, "alt", "cap"), Section("s", [Paragraph("q")])])]
    cache = FigureCache(tmp_path)
    assert cache.blocks("k", lambda: blocks) == blocks
    cache.save()
    again = FigureCache(tmp_path)
    assert again.blocks("k", lambda: pytest.fail("should be read back")) == blocks
    # A block whose figure is gone is made again; one outside the folder is never stored.
    image.unlink()
    made = []
    third = FigureCache(tmp_path)
    third.blocks("k", lambda: made.append(1) or [])
    assert made == [1]
    outside = FigureCache(tmp_path / "sub")
    outside.blocks("o", lambda: [Image(image, "alt")])
    assert "o" not in outside.used


def test_figures_drawn_in_worker_processes_are_those_drawn_in_one(tmp_path):
    # prefill draws the models' sections in parallel; the report and every figure file must
    # be the same bytes as a serial write, and the second write finds nothing left to draw.
    from study.report import build as build_module
    from study.report.figure_cache import FigureCache

    study = synthetic_study()
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    write_all(study, serial)
    write_all(study, parallel, workers=2)
    assert (parallel / "report.md").read_text() == (serial / "report.md").read_text()
    assert (parallel / "report.html").read_text() == (serial / "report.html").read_text()
    files = sorted(p.relative_to(serial) for p in (serial / "figures").rglob("*.png"))
    assert files and files == sorted(p.relative_to(parallel) for p in (parallel / "figures").rglob("*.png"))
    for name in files:
        assert (parallel / name).read_bytes() == (serial / name).read_bytes(), name
    answer = study_answer(study)
    cache = FigureCache(parallel / "figures")
    assert build_module.prefill(study, answer, parallel / "figures", cache, workers=2) == 0


def test_the_run_line_names_the_models_whose_fits_took_fewer_particles():
    from study.report.answer import particles_text

    study = synthetic_study()
    assert particles_text(study) == f"{study.settings.particles} particles"
    model = next(m for m in study.models if "svi_meanfield" in m.fits and m.fits["svi_meanfield"].ok)
    fewer = study.settings.particles - 1
    model.fits["svi_meanfield"].info = {**model.fits["svi_meanfield"].info, "particles": fewer}
    assert particles_text(study) == f"{study.settings.particles} particles ({fewer} on `{model.name}`)"


def test_the_speed_page_is_the_table_generated_from_benchmarks_results(tmp_path):
    """docs/speed.md is what benchmarks/speed_table.py writes from benchmarks/results/, one row per configuration."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("speed_table", ROOT / "benchmarks" / "speed_table.py")
    speed_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed_table)
    committed = (ROOT / "docs" / "speed.md").read_text(encoding="utf-8")
    assert committed == speed_table.table(ROOT / "benchmarks" / "results")
    results = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    expected = sum(len(speed_table.rows_of(p.name, json.loads(p.read_text(encoding="utf-8")))) for p in results)
    recorded = json.loads((ROOT / "benchmarks" / "results" / "recorded.json").read_text(encoding="utf-8"))["rows"]
    rows = [line for line in committed.splitlines() if re.match(r"\| \d{4}-\d\d-\d\d \|", line)]
    assert len(rows) == expected >= len(recorded) and all(row.count(" | ") == 6 for row in rows)
    # A run of old and new code in turn (speed.py --baseline) is one row with both medians.
    turn = [row for row in rows if "(medians of" in row and "in turn)" in row]
    assert len(turn) == sum("medians" in json.loads(p.read_text(encoding="utf-8")) for p in results)
    # A speed.py run copied into the folder adds its row.
    shutil.copy(ROOT / "benchmarks" / "results" / "recorded.json", tmp_path / "recorded.json")
    (tmp_path / "run.json").write_text(json.dumps({
        "cold": {"wall_seconds": 492.0, "fits_seconds": 840.0}, "warm": {"wall_seconds": 4.2},
        "machine": {"cpus": 2, "platform": "Linux", "python": "3.11", "date": "2030-01-01"}}))
    page = speed_table.table(tmp_path)
    first = [line for line in page.splitlines() if line.startswith("| 2030")]
    assert first == ["| 2030-01-01 | 2 cores, Linux, Python 3.11 | default study | 8 min 12 s (fits 840 s) | "
                     "4.2 s | – | run.json |"]
