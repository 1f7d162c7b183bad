"""HTTP plumbing shared by the broker and the node: problem+json, request context, body limits."""
