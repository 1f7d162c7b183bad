"""The node's web app for case workers (issue 19): server-rendered pages over the node's API."""
