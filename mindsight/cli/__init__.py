"""Command tree of `mindsight`; each module adds one group of subcommands."""
