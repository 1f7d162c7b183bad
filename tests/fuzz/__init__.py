"""Coverage-guided fuzzing (atheris) of the parsers that read what others send: the envelope
model, JWS objects, signed notes and checkpoints, and the broker's answers as the node's
client reads them. ``python -m tests.fuzz --list`` names the targets."""
