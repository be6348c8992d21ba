"""Benchmarks: the console side by side with raw baselines (slurmrestd, a PTY, the ORM), in one run."""
