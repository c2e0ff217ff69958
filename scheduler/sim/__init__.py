"""Time-compressed runs of the real pipeline against the simulators: scenarios,
`simulate`, its report, `soak`, and the demo's run."""
