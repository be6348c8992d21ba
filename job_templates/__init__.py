"""Job templates: scripts with named fields that administrators define, and people fill in and submit."""
