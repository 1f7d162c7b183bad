"""The auditors' report: aggregates only, small cells suppressed (docs/design.md §9)."""
