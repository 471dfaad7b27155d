"""Package discovery (the rest of the metadata is in pyproject.toml): the library from src/, and the
top-level conf/ shipped inside it as the package bincount.conf, so an installed bincount (a wheel, no
checkout) composes the same Hydra configs as train.py does from the checkout."""

from setuptools import find_namespace_packages, setup

setup(
    package_dir={"": "src", "bincount.conf": "conf"},
    packages=[
        *find_namespace_packages("src", include=["bincount", "bincount.*", "hydra_plugins", "hydra_plugins.*"]),
        "bincount.conf",
        *(f"bincount.conf.{group}" for group in find_namespace_packages("conf")),
    ],
)
