"""Documentation helpers (`python -m docs.screenshots`)."""
