"""Consent records: registration by the sending focal point, reading, withdrawal (§7)."""
