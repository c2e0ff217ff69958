"""reviewq workers: RQ job functions, provider clients, review planning and the GitHub client."""
