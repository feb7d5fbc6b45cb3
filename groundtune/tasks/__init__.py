"""Task runners over groundtune's core stages (models, methods, data, train, generate, metrics, retrieval,
merge): grounded dialogue (config -> samples -> train -> generate -> score), GLUE, in-context classification,
Korean summarization, sweeps and the demo. Each is one module; none is needed to use the core."""
