"""The tools built on the core: `ablate` (plan, run, report), `preflight`, `inspect`, `bench`,
`sample` and `export`. Each is the engine of one CLI command; the core (config, data, model,
train, rundir) never imports a tool (tests/test_layering.py checks it)."""
