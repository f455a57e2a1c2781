#!/usr/bin/env python
"""The shop example's command-line utility."""

import os
import sys


def main():
    """Run a management command with the example's settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
