"""Built-in tasks, one package each; the engine finds them through `raypipe.registry`, never by import."""
