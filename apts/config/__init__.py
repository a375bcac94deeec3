"""The config layer: compose a job's Hydra config, validate it, and precheck every job of a
command (a sweep included) before any rank starts. Everything that can fail before a
process starts fails here, as a one-line :class:`~apts.errors.ConfigError`."""
