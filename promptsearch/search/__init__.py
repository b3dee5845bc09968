"""The search loop and the job's records on disk (no Ray here: dispatch drives the loop)."""
