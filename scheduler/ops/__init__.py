"""What operators run against a deployment: reaching it, naming a PR, a read-only
snapshot of it, and putting failed work back. No click here: `scheduler.cli` renders."""
