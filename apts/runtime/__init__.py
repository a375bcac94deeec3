"""Running a job: start N ranks on this machine or join a world torchrun or SLURM/submitit
started, supervise them, and stop them (signals, heartbeat, exit codes)."""
