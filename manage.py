#!/usr/bin/env python
"""Django's command-line utility for the console."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clusterra_site.settings")
    from django.core.management import execute_from_command_line

    from accounts.oidc import ProviderConfigError
    from clusterra_site.env import ConfigError

    try:
        execute_from_command_line(sys.argv)
    except (ConfigError, ProviderConfigError) as e:
        # A setting the console cannot start with: the sentence that says what to do, not a traceback.
        sys.exit(str(e))
