"""Runs: what a page sees of a job, the queue in front of the device, and the runners that train."""
