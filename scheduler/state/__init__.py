"""What Redis remembers about PRs and messages, and the RQ jobs that act on it.

RQ jobs are tokens; the records are the truth (see `records`). One module per part:
- `keys`: every key name under a deployment's prefix (the layout is an API);
- `records`: the PR and message records, and how to read them;
- `txn`: one transaction over one PR's state;
- `jobs`: RQ queues and workers, job ids, and every job reviewq enqueues;
- `refs`: the id of a pull request at a forge.

Nothing is re-exported here: each name has one import path, and importing `refs`
(which worker code does for the id alone) does not load RQ through this package.
"""
