"""What to evaluate: the YAML spec, the configuration space, the task and stage interfaces a plugin
implements, and the registries that find tasks, stages and searches by name."""
