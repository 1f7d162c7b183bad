"""Delivery's rules, apart from the loop that applies them
(:mod:`trm_broker.background.dispatcher`): what an acknowledgement must be, what each outcome
does to a delivery, and who observes it."""
