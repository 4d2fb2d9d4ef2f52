"""`mindsight dev run`: the whole stack on one machine, as child processes, for development and demos."""
