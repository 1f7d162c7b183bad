"""Country codes are ISO 3166-1 alpha-2 (plus XK), wherever they appear."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trm_broker.domain.countries import COUNTRY_CODES, is_country
from trm_broker.domain.messages import ReferralHeader


def test_the_list_has_every_assigned_code_and_kosovo() -> None:
    assert len(COUNTRY_CODES) == 250  # 249 officially assigned + XK
    for code in ("AT", "NG", "GB", "XK", "MD", "UA", "AL", "RS"):
        assert is_country(code)


@pytest.mark.parametrize("code", ["UK", "EU", "XX", "ng", "NGA", ""])
def test_other_codes_are_refused(code: str) -> None:
    assert not is_country(code)
    with pytest.raises(ValidationError):
        ReferralHeader(destination_country=code, subject_is_minor=False)
