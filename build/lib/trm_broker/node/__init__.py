"""The reference NRM node: receives sealed messages (pushed to its inbox, or pulled from the
broker's), and sends case workers' ones."""
