"""Language models: the OpenAI-compatible client, the tiny default model, persona tokens and
the local model server."""
