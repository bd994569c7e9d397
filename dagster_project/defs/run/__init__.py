"""`simpersona run` as a job, for the UI."""
