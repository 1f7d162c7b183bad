"""`python -m trm_broker.cli`: the same command as `trm-broker` (used to start real processes)."""

from trm_broker.cli.app import app

app()
