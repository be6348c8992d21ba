"""Ways to reach a shell for the terminal page: the SSM data channel, or a local PTY."""
