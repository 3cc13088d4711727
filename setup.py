"""Packaging beside pyproject.toml: the checkout's top-level ``configs/`` and ``projects/`` folders install as
``recursivedet.configs`` (the configs' shared parts, loaded by name with ``recursivedet.model_zoo.get_config``)
and ``recursivedet.projects`` (every host's code and configs), in regular and editable installs alike."""

from setuptools import find_namespace_packages, find_packages, setup

MAPPED_FOLDERS = {"recursivedet.configs": "configs", "recursivedet.projects": "projects"}

packages = find_packages(include=["recursivedet", "recursivedet.*"])
for package, folder in MAPPED_FOLDERS.items():
    packages += [package] + [f"{package}.{sub}" for sub in find_namespace_packages(folder)]

setup(
    packages=packages,
    package_dir=MAPPED_FOLDERS,
    package_data={package: ["**/*.py", "**/*.md"] for package in MAPPED_FOLDERS},
)
