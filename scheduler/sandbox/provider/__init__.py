"""The provider simulator: an OpenAI-compatible endpoint that enforces a plan's quota
with its own code, in simulated time, and answers in each provider's real shapes."""
