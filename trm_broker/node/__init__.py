"""The reference NRM node: receives sealed messages at its inbox, sends case workers' ones."""
