"""Built-in stage implementations, one module per stage kind; none of them imports Ray."""
