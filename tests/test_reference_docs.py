"""docs/configuration.md and docs/metrics.md are what the code generates."""

from __future__ import annotations

from trm_broker.contract.reference_docs import DOCS_DIR, render
from trm_broker.settings import Settings
from trm_broker.settings_explained import env_names


def test_committed_reference_pages_match_the_code() -> None:
    stale = [
        path
        for path, text in render().items()
        if not (DOCS_DIR / path).exists() or (DOCS_DIR / path).read_text(encoding="utf-8") != text
    ]
    assert stale == [], "run `make docs` (trm-broker docs write) and commit docs/"


def test_the_configuration_page_names_every_setting_once() -> None:
    rows = [line for line in render()["configuration.md"].splitlines() if line.startswith("|")]
    for name, field in Settings.model_fields.items():
        variable = env_names(name, field)[0]
        described = [row for row in rows if row.startswith(f"| `{variable}` | ")]
        assert len(described) == 1, variable


def test_the_metrics_page_names_every_metric_a_scrape_shows() -> None:
    from trm_broker.contract.reference_docs import database_metrics, process_metrics

    page = render()["metrics.md"]
    names = [metric.name for metric in (*process_metrics(), *database_metrics())]
    assert "trm_messages_accepted_total" in names
    assert "trm_alerts_open" in names
    for name in names:
        assert f"| `{name}` |" in page
