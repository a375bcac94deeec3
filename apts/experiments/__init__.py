"""The experiments behind ``make reproduce``: the profiles (which presets, which data) and
running their sweeps, then the report."""
