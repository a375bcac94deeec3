"""The config layer: compose a job's Hydra config, validate it, and precheck every job of a
command (a sweep included) before any rank starts. Everything that can fail before a
process starts fails here, as a one-line :class:`~apts.errors.ConfigError`. The configs'
keys and their meanings (read from the YAML comments: ``apts-train --help`` and the "did
you mean" hints) are in :mod:`apts.config.doc`."""
