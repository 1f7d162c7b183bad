"""The reference NRM node: receives sealed messages at its inbox, sends its case workers' messages."""
