"""The broker's background loops, one shape for all (:mod:`.loop`): the ledger sequencer,
the delivery dispatcher, the retention purger and the alert scheduler. They run in the
server process or in `trm-broker worker` processes, beside the API, never inside it."""
