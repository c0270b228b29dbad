"""What a finished run prints last: the answer's claims for the models it ran, then the report.

The same claims as the report's opening (``study.report.answer``), as plain text: one line
each, the markdown's emphasis removed.
"""

from __future__ import annotations

import re

from study.core.results import StudyResult


def plain(text: str) -> str:
    """Markdown emphasis and code marks removed: ``**0.52** ± 0.003`` -> ``0.52 ± 0.003``."""
    return re.sub(r"(\*\*|`)", "", text)


def claim_lines(study: StudyResult) -> list[str]:
    """The opening's claims over the models of this run, numbered, one line each."""
    from study.report.answer import collapse_sentence, misses_sentence, proxy_sentence
    from study.report.summary import study_answer

    answer = study_answer(study)
    claims = [proxy_sentence(answer.get("headline", {})), misses_sentence(answer.get("benchmark", {})),
              collapse_sentence(answer.get("headline", {}))]
    claims = [plain(c) for c in claims if c]
    if not claims:
        return ["No model of this run produced the fits an answer needs."]
    return [f"{i}. {claim}" for i, claim in enumerate(claims, start=1)]
