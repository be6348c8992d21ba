import contextlib
import resource

from django.apps import AppConfig

# What a worker may need open at most: ~3 descriptors a terminal (the browser's socket, the PTY or
# the AWS socket, the shell's pidfd), thousands of terminals, and the rest of the console.
DESCRIPTORS_WANTED = 1 << 16


class TerminalConfig(AppConfig):
    name = "terminal"
    verbose_name = "Terminals"

    def ready(self) -> None:
        # `check --deploy` warns about a Redis without a password (it carries what people type), and
        # offboarding asks how many live terminals it will close (accounts cannot import terminal).
        from terminal import checks, receivers  # noqa: F401

        allow_many_descriptors()


def allow_many_descriptors(wanted: int = DESCRIPTORS_WANTED) -> int:
    """Raise this process's soft limit on open files towards the hard one; returns the soft limit now.

    systemd starts services with a soft limit of 1024 (its hard one is 524288), kept low only for
    programs that use select(); nothing of the console does (the event loop is epoll). At 1024 a
    worker would refuse the ~340th terminal with "Too many open files".
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
    return soft
