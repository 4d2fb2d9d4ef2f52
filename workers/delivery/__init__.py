"""The delivery core: what happens to every job, on every outcome, decided here and nowhere else.

- `envelope`: the typed job an RQ queue carries (capability, payloads, attempt, retry policy).
- `policy`: THE table from error type to outcome (retry / dead-letter / defer / pause).
- `settled`: which items of a batch are done for good, so a split re-runs only the rest.
- `outcomes`: the one way to dead-letter an item (DeadLetterQueue.push + the failed callback).
- `gallery_health`: the gallery-trouble record (`status`, /readyz) and the poison-photo rule.

Leaf modules only: nothing here imports workers.jobs, workers.failure or workers.dispatch.
"""
