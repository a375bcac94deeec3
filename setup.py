"""The package list: every package under apts/, found, plus configs/ as apts.configs (a
mapped folder, which pyproject.toml's static find cannot add). Everything else about the
package is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["apts", "apts.*"]), "apts.configs"])
