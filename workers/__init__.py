"""Queue consumers: the router (backend lists -> RQ) and one RQ worker per capability."""
