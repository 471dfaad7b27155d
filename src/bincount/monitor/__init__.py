"""Watching a run: the system monitor (utilization and step timing) and debugger callbacks."""
