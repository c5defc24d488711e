"""The registry: tool definitions in SQL behind a REST API, distributed into the catalog KV."""
