"""The outbox dispatcher: push accepted messages to recipients' inboxes, verify their acks."""
