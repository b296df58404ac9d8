"""User-facing errors and the exit codes they map to: the one home for both.

Each error carries one sentence for the operator; ``appliance.cli.run_guarded`` prints it and exits with the
class's code.  The codes a script can rely on:

====  ==========================================================================================
 0    done; every input decoded
 1    a run that started went wrong (a failed step, a lab that cannot be made, a write that failed)
 2    a bad command line or config (fix the arguments)
 3    an input is missing, unreadable or of an unknown format (nothing was decoded)
 4    inputs were decoded but at least one is damaged or cut short (``input_errors`` says where)
 77   a privilege or capability is missing (EX_NOPERM; run as root)
 130  interrupted (SIGINT) before the run could finish
====  ==========================================================================================
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_DAMAGED_INPUT = 4
EXIT_NOPERM = 77
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class UserError(Exception):
    """A problem the user can fix (bad option, missing input, missing capability); printed without a traceback."""

    exit_code = EXIT_USAGE


class InputError(UserError):
    """An input file is missing, unreadable or of an unknown format."""

    exit_code = EXIT_INPUT


class RunFailed(UserError):
    """Something that had started failed (a step, a write, a lab); the sentence says what and what to do."""

    exit_code = EXIT_FAILED


class NeedsPrivilege(UserError):
    """A capability the command needs is missing; the sentence names it."""

    exit_code = EXIT_NOPERM
