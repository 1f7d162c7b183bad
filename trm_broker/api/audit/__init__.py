"""The auditors' report: aggregates only, small cells suppressed (DESIGN.md §9)."""
