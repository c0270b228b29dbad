"""The report, its figures and the README block: structure, links, and numbers that come from results.json."""

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from report_data import TRUSTED_RATIO, UNTRUSTED_RATIO, synthetic_study

from study.report import readme as readme_module
from study.report.answer import answer_paragraph, fmt, headline, percent
from study.report.document import inline_html, to_markdown
from study.report.topics.benchmark import benchmark_table
from study.report.write import results_document, write_all
from study.report.build import build
from study.report.topics.overview import model_anchor
from study.report.summary import BAND, MAX_R_HAT, MIN_ESS_BULK, study_answer

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
    # Three figures per fitted model, one across models, the shortfall law's; the failed model gets its reason.
    assert len(page.imgs) == 3 * 2 + 1 + 1
    assert "ValueError: data() raised" in html
    assert "laplace_torch_full` failed" in (out / "report.md").read_text() or "laplace_torch_full</code> failed" in html


def test_markdown_images_are_relative_and_exist(out):
    markdown = (out / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == 3 * 2 + 1 + 1  # per model, across models, the shortfall law
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


def test_answer_paragraph_is_a_function_of_results_json(results, page):
    """The page's answer is exactly the paragraph that results.json's numbers give."""
    titles = {name: m["title"] for name, m in results["models"].items()}
    expected = answer_paragraph(results["answer"], titles)
    rendered = re.sub(r"<[^>]+>", "", inline_html(expected))
    import html as html_module

    assert html_module.unescape(rendered) in page.paragraphs


def test_a_literal_asterisk_inside_an_italic_note_stays_an_asterisk(page):
    """The SE note is italic and names the * marker: the marker must not end the emphasis."""
    assert inline_html("*a \\* b*") == "<em>a &#42; b</em>"
    assert inline_html("0.99 ± 8.0e-04*") == "0.99 ± 8.0e-04*"
    note = [p for p in page.paragraphs if p.startswith("In the opening sentences")]
    assert len(note) == 1 and "undercut. * marks an SE" in note[0] and not note[0].endswith("*")


def test_report_opens_with_the_three_sentence_answer_then_the_benchmark(results, page, out):
    import html as html_module

    rendered = html_module.unescape(re.sub(r"<[^>]+>", "", inline_html(headline(results["answer"]))))
    assert page.paragraphs[0] == rendered
    assert "benchmark" in page.ids
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert markdown.index(headline(results["answer"])) < markdown.index("## Gaussian, correlated")
    assert markdown.index("The answer over the benchmark") < markdown.index("## Gaussian, correlated")


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
        out.update({fmt(value), str(value), f"{value:.3g}"})
        if 0 <= value <= 1:
            out.add(percent(value))
    return out


def test_every_number_in_the_answer_comes_from_results_json(results, page):
    titles = {name: m["title"] for name, m in results["models"].items()}
    text = answer_paragraph(results["answer"], titles)
    for title in titles.values():  # titles may hold digits of their own
        text = text.replace(title, "")
    text = re.sub(r"`[^`]*`", "", text)  # parameter names
    text = re.sub(r"\([A-Z][a-z]+ (&|et al\.) [A-Z]?[a-z]* ?\d{4}\)|PRML §[\d.]+", "", text)  # citations
    allowed = _printed_values(results["answer"], set())
    n_models = {str(len([m for m in results["answer"]["models"].values() if key in m]))
                for key in ("svi_over_laplace_diag", "svi_over_reference")}
    allowed |= n_models | {str(len(results["answer"]["models"]))}
    # Thresholds of the study, from their constants (not results): BAND, FOLLOW_SHARE, the trust limits,
    # and the "per 1000 steps" unit.
    from study.report.answer import FOLLOW_SHARE, MAX_DRIFT

    allowed |= {f"{round(100 * (BAND - 1))}%", f"{round(100 * (1 - 1 / BAND))}%", percent(FOLLOW_SHARE),
                percent(MAX_DRIFT), str(MAX_R_HAT), str(MIN_ESS_BULK), "1000", "1", "0"}
    numbers = _numbers(text.replace("σᵢ⁻²", "").replace("H⁻¹", ""))
    assert numbers, text
    unexplained = [n for n in numbers if n not in allowed]
    assert unexplained == [], (unexplained, text)


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
    text = answer_paragraph(results["answer"], {n: m["title"] for n, m in results["models"].items()})
    assert f"**{fmt(TRUSTED_RATIO)}**" in text
    assert "leaving out Network with a stuck sampler, whose NUTS reference is untrusted" in text
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
    """Claims are chosen by thresholds: no "σ is a proxy" when the ratios say otherwise."""
    study = synthetic_study()
    for model in study.models[:2]:  # σ_SVI three times 1/√Hᵢᵢ in every model
        model.fits["svi_meanfield"].sd = 3.0 * model.fits["laplace_diag"].sd
    text = answer_paragraph(study_answer(study), {m.name: m.title for m in study.models})
    assert "Only 0 of 2 models" in text and "not a reliable proxy" in text
    assert "σ is a proxy" not in text

    study = synthetic_study()
    for model in study.models[:2]:  # now σ_SVI = 1/√Hᵢᵢ everywhere
        model.fits["svi_meanfield"].sd = model.fits["laplace_diag"].sd.copy()
    text = answer_paragraph(study_answer(study), {m.name: m.title for m in study.models})
    assert "That holds in every model" in text and "σ is a proxy for the Hessian diagonal" in text
    assert "Not in" not in text


def test_breaking_model_gets_its_reason_from_the_numbers():
    study = synthetic_study()
    model = study.models[0]
    model.fits["svi_meanfield"].sd = 2.0 * model.fits["laplace_diag"].sd
    model.fits["laplace_full"].sd = 0.5 * model.fits["reference"].sd  # Laplace misses the reference too
    text = answer_paragraph(study_answer(study), {m.name: m.title for m in study.models})
    assert "Not in Gaussian, correlated (median 2" in text
    assert "√(H⁻¹)ᵢᵢ misses the reference sd too (median ratio 0.5)" in text
    assert "σᵢ to E_q[Hᵢᵢ]" in text


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
    titles = {name: m["title"] for name, m in results["models"].items()}
    assert answer_paragraph(results["answer"], titles) in block
    # It opens with the three-sentence answer, and carries the benchmark's table, both from results.json.
    assert block.split("\n\n")[1] == headline(results["answer"])
    assert to_markdown([benchmark_table(results["answer"])], tmp_path).strip() in block
    assert "![" in block and "(docs/across-models.png)" in block
    assert (tmp_path / "docs" / "across-models.png").stat().st_size > 1000
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


def test_committed_readme_block_is_generated_and_its_figure_exists():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(readme_module.START):text.index(readme_module.END)]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", block)
    assert links and all((ROOT / link).is_file() for link in links)
    assert "**Answer**" in block and "**Question.**" in block
    assert not re.search(r"(/tmp/|/home/|/root/|/work/|[A-Z]:\\)", text)
    numbers = np.array([float(x) for x in re.findall(r"median \*\*([-\d.e]+)\*\*", block)])
    assert numbers.size >= 2 and np.all(np.isfinite(numbers))


def test_report_with_a_subset_of_methods(tmp_path):
    """Only some methods ran: the figures that need the others are left out, the answer says what it can."""
    study = synthetic_study()
    for model in study.models:
        model.fits = {k: v for k, v in model.fits.items() if k in ("svi_meanfield", "reference")}
    study.methods = ["svi_meanfield", "reference"]
    write_all(study, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "figures/sigma-curvature-gauss-ok.png" in markdown and "collapse-gauss-ok" not in markdown
    text = answer_paragraph(study_answer(study), {m.name: m.title for m in study.models})
    assert "1/√Hᵢᵢ at the MAP" not in text and f"**{fmt(TRUSTED_RATIO)}**" in text


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
    # The figure link is docs/across-models.png relative to the README in both copies.
    assert readme.read_text(encoding="utf-8") == (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_table_numbers_all_come_from_results_json(out, results, tmp_path):
    """Every number of the README block's table is one of results.json's answer, as the report prints it."""
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    readme_module.update(out / "results.json", readme, tmp_path / "docs")
    text = readme.read_text()
    block = text[text.index(readme_module.START):text.index(readme_module.END)]
    titles = {m["title"] for m in results["models"].values()}
    # The per-model table: one row per model, first cell its title (the benchmark table follows).
    rows = [line for line in block.splitlines()
            if line.startswith("| ") and line.strip("| ").split(" | ")[0] in titles]
    assert len(rows) == len(results["models"])
    allowed = _printed_values(results["answer"], set())
    allowed |= {fmt(float(v), 2) for v in allowed if re.fullmatch(r"-?[\d.]+(e[-+]\d+)?", v)}  # SEs: 2 digits
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        numbers = _numbers(" ".join(cells[2:]).replace("/1000", ""))  # past the model's title and reference
        ok = any(m["title"] == cells[0] and m["status"] == "ok" for m in results["models"].values())
        assert bool(numbers) == ok, row  # a failed model's row carries its reason, no numbers
        assert [n for n in numbers if n not in allowed] == [], row


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
