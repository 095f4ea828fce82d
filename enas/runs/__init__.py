"""Run folders: layout, logs, progress, checkpoints, genotype files and drawings."""
