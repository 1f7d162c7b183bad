"""Wire models of the pull inbox."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from trm_broker.api.messages.schemas import SignedObject


class InboxItemOut(BaseModel):
    cursor: int = Field(description="Pass as `after` to fetch what follows this item.")
    message_id: str
    envelope: SignedObject = Field(description="The sender's signed envelope, as accepted.")
    receipt: SignedObject = Field(description="The broker's signed receipt for it.")


class InboxPage(BaseModel):
    """Unacknowledged messages for the caller, in acceptance order. Each item's
    ``{envelope, receipt}`` is exactly what a push to an inbox URL carries."""

    items: list[InboxItemOut]
    next: int | None = Field(description="The last item's cursor; null when empty.")


class AckIn(BaseModel):
    ack: SignedObject = Field(
        description="The recipient's signed answer (JWS, typ trm-ack+jws): status received, "
        "or rejected with reasons."
    )


class AckOut(BaseModel):
    message_id: str
    status: Literal["acknowledged", "rejected"]
