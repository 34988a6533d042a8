"""End-to-end tests: the CLI, the DAGs under dag.test() and a real scheduler, readers of the outputs, properties over generated data."""
