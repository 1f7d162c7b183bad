"""Wire models of consent records."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trm_broker.domain.consent import GivenBy
from trm_broker.domain.countries import CountryCode
from trm_broker.domain.envelope import CASE_REF_PATTERN, CONSENT_REF_PATTERN
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.participants import PARTICIPANT_ID_PATTERN
from trm_broker.domain.signed_objects import DIGEST_PATTERN
from trm_broker.domain.times import UtcTime

ParticipantId = Annotated[str, Field(pattern=PARTICIPANT_ID_PATTERN)]


class ConsentIn(BaseModel):
    """A consent as the sending focal point registers it. Nothing here names the person:
    the signed form stays at the node, and only its digest travels."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(
        None,
        pattern=CONSENT_REF_PATTERN,
        description="The consent's id as the node's case system names it (messages cite it as "
        "consent_ref); the broker makes one up if it is left out.",
    )
    case_ref: str = Field(pattern=CASE_REF_PATTERN)
    given_by: GivenBy = Field(description="The person, or a guardian for a child.")
    purposes: list[MessageType] = Field(min_length=1, max_length=len(MessageType))
    recipients: list[ParticipantId] = Field(
        default_factory=list, max_length=50, description="Participant ids data may go to."
    )
    recipient_countries: list[CountryCode] = Field(
        default_factory=list, max_length=50, description="Or whole countries."
    )
    data_categories: list[DataCategory] = Field(min_length=1, max_length=7)
    valid_from: UtcTime
    valid_until: UtcTime | None = None
    form_digest: str = Field(
        pattern=DIGEST_PATTERN, description="sha-256 of the signed consent form kept at the node."
    )

    @model_validator(mode="after")
    def _coherent(self) -> ConsentIn:
        if not self.recipients and not self.recipient_countries:
            raise ValueError("name at least one recipient or recipient country")
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        for values in (self.purposes, self.recipients, self.recipient_countries):
            if len(set(values)) != len(values):
                raise ValueError("lists must not repeat a value")
        if len(set(self.data_categories)) != len(self.data_categories):
            raise ValueError("lists must not repeat a value")
        return self


class ConsentOut(BaseModel):
    id: str
    case_ref: str
    registered_by: str
    given_by: GivenBy
    purposes: list[MessageType]
    recipients: list[str]
    recipient_countries: list[str]
    data_categories: list[DataCategory]
    valid_from: datetime
    valid_until: datetime | None
    form_digest: str
    registered_at: datetime
    withdrawn_at: datetime | None
