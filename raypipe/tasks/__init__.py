"""Built-in tasks, one package each; the engine finds them through the registry, never by import."""
