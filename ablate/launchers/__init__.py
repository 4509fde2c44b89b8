"""Running a suite's tasks: one process, several GPUs, Slurm, torchrun."""
