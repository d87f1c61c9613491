"""Print jobs: G-code files, the job state machine and streaming, and job history."""
