"""The wire contract rendered from the code: JSON Schemas and OpenAPI (:mod:`.schemas`) and
the test vectors another implementation checks itself against (:mod:`.vectors`)."""
