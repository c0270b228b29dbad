"""What a finished run prints last: the answer's claims for the models it ran, then the report.

The report's opening claims (``study.report.claims``), as plain text, one numbered line each.
"""

from __future__ import annotations

from study.core.results import StudyResult


def claim_lines(study: StudyResult) -> list[str]:
    """The opening's numbered claims over the models of this run, one line each."""
    from study.report.claims import claims, plain
    from study.report.summary import study_answer

    made = claims(study_answer(study))
    if not made:
        return ["No model of this run produced the fits an answer needs."]
    return [f"{i}. {plain(claim.text)}" for i, claim in enumerate(made, start=1)]
