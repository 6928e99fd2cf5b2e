"""The load-flow engine of the twin: inputs, solver, storage, violations, scenarios, services and selectors."""
