"""What Redis remembers about PRs and messages: key names, records, one-PR
transactions, job ids, and every RQ job reviewq enqueues.

RQ jobs are tokens; the records here are the truth (see `records`).
"""
