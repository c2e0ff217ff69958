"""From a PR's changed files to one review: what is worth reviewing (skip rules),
messages packed under a token budget (planning), model replies read back and gathered
(replies), and model text made safe to post."""
