"""The one exception type of the analysis package."""


class AnalysisError(Exception):
    """Results that cannot be analysed; the message names the path (or member) and the problem.

    `python -m analysis` prints it on one line (`analysis: error: ...`) and exits with status 2.
    """
