"""``python -m recursivedet.deploy``: see :mod:`recursivedet.deploy.command`."""

from recursivedet.deploy.command import command
from recursivedet.errors import run_command

run_command(command)
