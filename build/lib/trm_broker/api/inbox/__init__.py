"""The pull inbox: for recipients the broker cannot push to."""
